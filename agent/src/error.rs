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

    #[test]
    fn strerror_is_plain() {
        assert_eq!(strerror(libc::ENOENT), "No such file or directory");
        let f = io_failure(&io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(f.kind, FailureKind::Os);
        assert_eq!(f.errno, libc::EACCES);
        assert_eq!(f.message, "Permission denied");
    }

    #[test]
    fn invalid_input_is_bad_request() {
        let f = io_failure(&io::Error::new(io::ErrorKind::InvalidInput, "nul byte"));
        assert_eq!(f.kind, FailureKind::BadRequest);
        assert_eq!(f.errno, 0);
    }
}
