//! Turning OS errors into protocol [`Failure`]s.

use std::io;

use provium_protocol::{Failure, FailureKind, Reply};

/// What every operation returns: the reply, or why it failed.
pub type OpResult = Result<Reply, Failure>;

/// The plain `strerror` text of an errno ("No such file or directory"),
/// without the " (os error N)" suffix Rust's `Display` adds.
pub fn strerror(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    let suffix = format!(" (os error {errno})");
    match text.strip_suffix(&suffix) {
        Some(plain) => plain.to_owned(),
        None => text,
    }
}

/// A failure carrying `errno` and its `strerror` text.
pub fn errno_failure(errno: i32) -> Failure {
    Failure::os(errno, strerror(errno))
}

/// A failure carrying the errno of a rustix call (the same number an
/// [`io::Error`] converted from it would carry).
pub fn os_failure(err: rustix::io::Errno) -> Failure {
    errno_failure(err.raw_os_error())
}

/// Converts an I/O error: OS errors keep their errno; invalid input (a path
/// with a NUL byte, say) is a bad request; anything else is internal.
pub fn io_failure(err: &io::Error) -> Failure {
    match err.raw_os_error() {
        Some(errno) => errno_failure(errno),
        None if err.kind() == io::ErrorKind::InvalidInput => {
            Failure::other(FailureKind::BadRequest, err.to_string())
        }
        None => Failure::other(FailureKind::Internal, err.to_string()),
    }
}

/// A [`FailureKind::BadRequest`] failure.
pub fn bad_request(message: impl Into<String>) -> Failure {
    Failure::other(FailureKind::BadRequest, message)
}

/// A [`FailureKind::Internal`] failure.
pub fn internal(message: impl Into<String>) -> Failure {
    Failure::other(FailureKind::Internal, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::Errno;

    #[test]
    fn strerror_is_plain() {
        assert_eq!(
            strerror(Errno::NOENT.raw_os_error()),
            "No such file or directory"
        );
        let eacces = Errno::ACCESS.raw_os_error();
        let f = io_failure(&io::Error::from_raw_os_error(eacces));
        assert_eq!(f.kind, FailureKind::Os);
        assert_eq!(f.errno, eacces);
        assert_eq!(f.message, "Permission denied");
    }

    #[test]
    fn rustix_errors_keep_their_errno() {
        let f = os_failure(Errno::NOENT);
        assert_eq!(f.kind, FailureKind::Os);
        assert_eq!(f.errno, Errno::NOENT.raw_os_error());
        assert_eq!(f, io_failure(&io::Error::from(Errno::NOENT)));
    }

    #[test]
    fn invalid_input_is_bad_request() {
        let f = io_failure(&io::Error::new(io::ErrorKind::InvalidInput, "nul byte"));
        assert_eq!(f.kind, FailureKind::BadRequest);
        assert_eq!(f.errno, 0);
    }
}
