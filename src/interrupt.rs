//! Ctrl-C (SIGINT) while a Lua call is blocked on the guest.
//!
//! `lua5.4` handles SIGINT by setting a hook that raises `interrupted!` at
//! the next Lua instruction, which never comes while a call is blocked in
//! native code. So a call that has waited a moment arms a [`Watch`]: our
//! handler is installed for the duration of the wait, records the signal
//! and chains to the handler it replaced (so `lua5.4` still learns of it);
//! the waiting loop sees [`Watch::fired`] within one poll slice and the
//! call raises. Fast calls never arm anything.
//!
//! Hand-rolled on `sigaction(2)` rather than `signal-hook`: its handlers stay
//! installed for the life of the process and only chain to a previous
//! *function*, so an embedding program whose SIGINT is the default action
//! would stop being killed by Ctrl-C outside provium's calls. Here the
//! handler exists only while a call waits, and the previous disposition is
//! put back afterwards (unless someone replaced ours meanwhile, as
//! `lua5.4`'s own handler does when it resets SIGINT to the default).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Set by the handler; cleared when a watch is armed.
static FIRED: AtomicBool = AtomicBool::new(false);
/// The replaced handler (`SIG_DFL`, `SIG_IGN` or a function address).
static PREVIOUS: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
/// Whether the replaced handler takes `siginfo` (`SA_SIGINFO`).
static PREVIOUS_SIGINFO: AtomicBool = AtomicBool::new(false);

/// Nesting of armed watches (several Lua states may wait at once), and the
/// disposition to restore when the last one ends.
static ARMED: Mutex<(usize, Option<libc::sigaction>)> = Mutex::new((0, None));

extern "C" fn on_sigint(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = PREVIOUS.load(Ordering::Acquire);
    if prev == libc::SIG_IGN {
        return;
    }
    FIRED.store(true, Ordering::Release);
    if prev == libc::SIG_DFL {
        return;
    }
    // SAFETY: `prev` is the address of the handler that was installed for
    // SIGINT before ours, with the calling convention its flags say.
    unsafe {
        if PREVIOUS_SIGINFO.load(Ordering::Acquire) {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(prev);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(prev);
            f(sig);
        }
    }
}

fn handler_address() -> libc::sighandler_t {
    on_sigint as *const () as libc::sighandler_t
}

/// An armed SIGINT watch; disarms on drop.
pub struct Watch(());

impl Watch {
    /// Installs the handler (or joins the one already installed).
    pub fn arm() -> Watch {
        let mut armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
        if armed.0 == 0 {
            FIRED.store(false, Ordering::Release);
            // SAFETY: sigaction with a zeroed, then filled, struct; the
            // handler only touches atomics and calls the previous handler.
            unsafe {
                let mut ours: libc::sigaction = std::mem::zeroed();
                ours.sa_sigaction = handler_address();
                ours.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
                libc::sigemptyset(&mut ours.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(libc::SIGINT, &ours, &mut old) == 0 {
                    PREVIOUS.store(old.sa_sigaction, Ordering::Release);
                    PREVIOUS_SIGINFO.store(old.sa_flags & libc::SA_SIGINFO != 0, Ordering::Release);
                    armed.1 = Some(old);
                }
            }
        }
        armed.0 += 1;
        Watch(())
    }

    /// Whether SIGINT arrived while armed (and was not ignored).
    pub fn fired(&self) -> bool {
        FIRED.load(Ordering::Acquire)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
        armed.0 = armed.0.saturating_sub(1);
        if armed.0 > 0 {
            return;
        }
        if let Some(old) = armed.1.take() {
            // SAFETY: reads the current disposition, and restores the saved
            // one only if ours is still installed.
            unsafe {
                let mut now: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(libc::SIGINT, std::ptr::null(), &mut now) == 0
                    && now.sa_sigaction == handler_address()
                {
                    libc::sigaction(libc::SIGINT, &old, std::ptr::null_mut());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sigint_while_armed_is_seen_and_the_old_handler_comes_back() {
        static SEEN: AtomicBool = AtomicBool::new(false);
        extern "C" fn old_handler(_: libc::c_int) {
            SEEN.store(true, Ordering::SeqCst);
        }
        // SAFETY: test-only handler installation and a signal to ourselves.
        unsafe {
            libc::signal(libc::SIGINT, old_handler as *const () as usize);
            {
                let w = Watch::arm();
                assert!(!w.fired());
                libc::raise(libc::SIGINT);
                assert!(w.fired(), "the watch saw the signal");
                assert!(SEEN.load(Ordering::SeqCst), "the old handler was chained");
            }
            let mut now: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGINT, std::ptr::null(), &mut now);
            assert_eq!(now.sa_sigaction, old_handler as *const () as usize);
            libc::signal(libc::SIGINT, libc::SIG_DFL);
        }
    }
}
