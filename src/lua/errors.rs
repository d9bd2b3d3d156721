//! Errors as Lua sees them.
//!
//! Rust callbacks never raise: mlua would wrap the value in its own userdata,
//! and Lua code expects plain strings and error tables. Every core function
//! returns `true, results...` or `false, err`; the Lua modules (`lua/provium/errors.lua`) raise `err`
//! (a string for argument, state and infrastructure errors; a table with
//! `op`, `path`, `errno`, `code`, `message` for guest OS failures).

use mlua::{IntoLua, IntoLuaMulti, Lua, MultiValue, Value};
use provium_protocol::{Failure, FailureKind};

/// An error to hand back to Lua.
#[derive(Debug)]
pub enum ApiError {
    /// Bad argument or wrong state: a message starting with the call.
    Msg(String),
    /// The guest OS refused.
    Guest(GuestError),
}

/// A guest OS failure, raised as a table.
#[derive(Debug)]
pub struct GuestError {
    /// The call, e.g. `vm:read_file`.
    pub op: String,
    /// The path involved, if any.
    pub path: Option<Vec<u8>>,
    /// The call with its arguments, e.g. `vm:rename("/a", "/b")`.
    pub call: String,
    /// The guest's errno; 0 for a failure that is not an OS error.
    pub errno: i32,
    /// The agent's message (for an OS error, the guest's `strerror`).
    pub message: String,
    /// Non-OS failures keep their class here (e.g. `"bad_request"`).
    pub kind: Option<&'static str>,
}

/// The result of a core function, before [`ret`] turns it into `ok, ...`.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// A message error.
    pub fn msg(s: impl Into<String>) -> Self {
        ApiError::Msg(s.into())
    }
}

impl From<mlua::Error> for ApiError {
    fn from(e: mlua::Error) -> Self {
        ApiError::Msg(e.to_string())
    }
}

impl IntoLua for ApiError {
    fn into_lua(self, lua: &Lua) -> mlua::Result<Value> {
        match self {
            ApiError::Msg(m) => m.into_lua(lua),
            ApiError::Guest(g) => g.into_lua(lua),
        }
    }
}

/// Turns a result into the `ok, ...` convention.
pub fn ret<T: IntoLuaMulti>(lua: &Lua, r: ApiResult<T>) -> mlua::Result<MultiValue> {
    match r {
        Ok(v) => {
            let mut mv = v.into_lua_multi(lua)?;
            mv.push_front(Value::Boolean(true));
            Ok(mv)
        }
        Err(e) => Ok(MultiValue::from_vec(vec![
            Value::Boolean(false),
            e.into_lua(lua)?,
        ])),
    }
}

impl IntoLua for GuestError {
    fn into_lua(self, lua: &Lua) -> mlua::Result<Value> {
        let t = lua.create_table()?;
        t.set("op", self.op)?;
        if let Some(p) = self.path {
            t.set("path", lua.create_string(&p)?)?;
        }
        t.set("call", self.call)?;
        t.set("errno", self.errno)?;
        t.set(
            "code",
            errno_name(self.errno).unwrap_or(self.kind.unwrap_or("EUNKNOWN")),
        )?;
        t.set("message", self.message)?;
        if let Some(k) = self.kind {
            t.set("kind", k)?;
        }
        Ok(Value::Table(t))
    }
}

/// Builds the error for a failed guest call.
pub fn guest_failure(op: &str, call: String, path: Option<&[u8]>, f: Failure) -> ApiError {
    let kind = match f.kind {
        FailureKind::Os => None,
        FailureKind::BadRequest => Some("bad_request"),
        FailureKind::Unsupported => Some("unsupported"),
        FailureKind::UnknownHandle => Some("unknown_handle"),
        FailureKind::Internal => Some("internal"),
    };
    ApiError::Guest(GuestError {
        op: op.to_string(),
        path: path.map(|p| p.to_vec()),
        call,
        errno: f.errno,
        message: f.message,
        kind,
    })
}

/// The symbolic name of a Linux errno.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    const NAMES: &[&str] = &[
        "",
        "EPERM",
        "ENOENT",
        "ESRCH",
        "EINTR",
        "EIO",
        "ENXIO",
        "E2BIG",
        "ENOEXEC",
        "EBADF",
        "ECHILD",
        "EAGAIN",
        "ENOMEM",
        "EACCES",
        "EFAULT",
        "ENOTBLK",
        "EBUSY",
        "EEXIST",
        "EXDEV",
        "ENODEV",
        "ENOTDIR",
        "EISDIR",
        "EINVAL",
        "ENFILE",
        "EMFILE",
        "ENOTTY",
        "ETXTBSY",
        "EFBIG",
        "ENOSPC",
        "ESPIPE",
        "EROFS",
        "EMLINK",
        "EPIPE",
        "EDOM",
        "ERANGE",
        "EDEADLK",
        "ENAMETOOLONG",
        "ENOLCK",
        "ENOSYS",
        "ENOTEMPTY",
        "ELOOP",
        "",
        "ENOMSG",
        "EIDRM",
        "ECHRNG",
        "EL2NSYNC",
        "EL3HLT",
        "EL3RST",
        "ELNRNG",
        "EUNATCH",
        "ENOCSI",
        "EL2HLT",
        "EBADE",
        "EBADR",
        "EXFULL",
        "ENOANO",
        "EBADRQC",
        "EBADSLT",
        "",
        "EBFONT",
        "ENOSTR",
        "ENODATA",
        "ETIME",
        "ENOSR",
        "ENONET",
        "ENOPKG",
        "EREMOTE",
        "ENOLINK",
        "EADV",
        "ESRMNT",
        "ECOMM",
        "EPROTO",
        "EMULTIHOP",
        "EDOTDOT",
        "EBADMSG",
        "EOVERFLOW",
        "ENOTUNIQ",
        "EBADFD",
        "EREMCHG",
        "ELIBACC",
        "ELIBBAD",
        "ELIBSCN",
        "ELIBMAX",
        "ELIBEXEC",
        "EILSEQ",
        "ERESTART",
        "ESTRPIPE",
        "EUSERS",
        "ENOTSOCK",
        "EDESTADDRREQ",
        "EMSGSIZE",
        "EPROTOTYPE",
        "ENOPROTOOPT",
        "EPROTONOSUPPORT",
        "ESOCKTNOSUPPORT",
        "EOPNOTSUPP",
        "EPFNOSUPPORT",
        "EAFNOSUPPORT",
        "EADDRINUSE",
        "EADDRNOTAVAIL",
        "ENETDOWN",
        "ENETUNREACH",
        "ENETRESET",
        "ECONNABORTED",
        "ECONNRESET",
        "ENOBUFS",
        "EISCONN",
        "ENOTCONN",
        "ESHUTDOWN",
        "ETOOMANYREFS",
        "ETIMEDOUT",
        "ECONNREFUSED",
        "EHOSTDOWN",
        "EHOSTUNREACH",
        "EALREADY",
        "EINPROGRESS",
        "ESTALE",
        "EUCLEAN",
        "ENOTNAM",
        "ENAVAIL",
        "EISNAM",
        "EREMOTEIO",
        "EDQUOT",
        "ENOMEDIUM",
        "EMEDIUMTYPE",
        "ECANCELED",
        "ENOKEY",
        "EKEYEXPIRED",
        "EKEYREVOKED",
        "EKEYREJECTED",
        "EOWNERDEAD",
        "ENOTRECOVERABLE",
        "ERFKILL",
        "EHWPOISON",
    ];
    usize::try_from(errno)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::errno_name;

    #[test]
    fn errno_names_match_linux() {
        assert_eq!(errno_name(libc::ENOENT), Some("ENOENT"));
        assert_eq!(errno_name(libc::EACCES), Some("EACCES"));
        assert_eq!(errno_name(libc::ENOTEMPTY), Some("ENOTEMPTY"));
        assert_eq!(errno_name(libc::ELOOP), Some("ELOOP"));
        assert_eq!(errno_name(libc::ETIMEDOUT), Some("ETIMEDOUT"));
        assert_eq!(errno_name(libc::EHWPOISON), Some("EHWPOISON"));
        assert_eq!(errno_name(0), None);
        assert_eq!(errno_name(-3), None);
        assert_eq!(errno_name(100_000), None);
    }
}
