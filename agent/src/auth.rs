//! Who may open a connection to the agent's vsock listener.
//!
//! The connection the guest dials (or the serial port) reaches only the
//! process that started the VM: with kernel vsock the host accepts it only
//! from the guest's CID, which no host process can forge; the vhost-user
//! and serial sockets live in the user's private run directory. The host's
//! hello on that connection carries the VM's [`SessionToken`], which this
//! module keeps. Anyone else can reach [`provium_protocol::AGENT_PORT`]
//! (any local user can connect to a guest CID), so every connection there
//! must start with [`AUTH_MAGIC`] and the token; a connection that does not
//! is closed before the agent writes a single byte.

use std::io::Read;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use provium_protocol::{SessionToken, AUTH_MAGIC};

/// How long a host-initiated connection has to show the token.
pub const AUTH_GRACE: Duration = Duration::from_secs(2);

/// The token of the current host session (`None` before the first hello).
static TOKEN: Mutex<Option<SessionToken>> = Mutex::new(None);

/// Signalled when a token is learnt.
static LEARNT: Condvar = Condvar::new();

/// Remembers the token of a host hello received on a trusted connection.
pub fn learn(token: SessionToken) {
    *TOKEN.lock().unwrap_or_else(|e| e.into_inner()) = Some(token);
    LEARNT.notify_all();
}

/// Whether `proof` (the first bytes of a connection) is the magic and the
/// current token. The host may connect here the moment it has written its
/// hello, before the connection thread has read it: a proof that comes
/// first waits up to [`AUTH_GRACE`] for the token.
pub fn admits(proof: &[u8]) -> bool {
    let deadline = Instant::now() + AUTH_GRACE;
    let mut known = TOKEN.lock().unwrap_or_else(|e| e.into_inner());
    while known.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        known = LEARNT
            .wait_timeout(known, left)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
    let Some(token) = *known else {
        return false;
    };
    match proof.strip_prefix(AUTH_MAGIC.as_slice()) {
        Some(rest) => token.matches(rest),
        None => false,
    }
}

/// Reads the proof from a fresh connection (the caller bounds the wait
/// with a read timeout) and says whether it admits the connection.
pub fn check<R: Read>(stream: &mut R) -> bool {
    let mut proof = [0u8; AUTH_MAGIC.len() + SessionToken::LEN];
    if let Err(e) = stream.read_exact(&mut proof) {
        debug!("no session token shown: {e}");
        return false;
    }
    admits(&proof)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_learnt_token_after_the_magic_is_admitted() {
        let mut proof = AUTH_MAGIC.to_vec();
        proof.extend_from_slice(&[9; SessionToken::LEN]);
        let t0 = Instant::now();
        assert!(!admits(&proof), "no token learnt yet");
        assert!(t0.elapsed() >= AUTH_GRACE, "waited for one");
        // A token learnt while a proof waits admits it.
        let waiter = std::thread::spawn({
            let proof = proof.clone();
            move || admits(&proof)
        });
        std::thread::sleep(Duration::from_millis(50));
        learn(SessionToken([9; SessionToken::LEN]));
        assert!(waiter.join().unwrap());
        assert!(admits(&proof));
        assert!(check(&mut proof.as_slice()));
        let mut wrong = proof.clone();
        wrong[AUTH_MAGIC.len()] = 1;
        assert!(!admits(&wrong));
        assert!(!check(&mut &proof[..20]), "a short proof is refused");
        let mut echo = b"PRVECHO\n".to_vec();
        echo.extend_from_slice(&[9; SessionToken::LEN]);
        assert!(!admits(&echo), "the magic is required");
    }
}
