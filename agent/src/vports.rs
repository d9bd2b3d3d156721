//! virtio-serial ports by name (no udev in the guest: the names are in
//! `/sys/class/virtio-ports`).

use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

/// How often [`wait`] looks again.
const LOOK_AGAIN: Duration = Duration::from_millis(20);

/// Looks for the port named `wanted` every 20 ms until found; says so in
/// the log after 5 s of looking.
pub fn wait(wanted: &str) -> PathBuf {
    let mut tries: u64 = 0;
    loop {
        if let Some(path) = find(wanted) {
            return path;
        }
        tries += 1;
        if tries == 250 {
            log!("still looking for the virtio-serial port {wanted:?}");
        }
        thread::sleep(LOOK_AGAIN);
    }
}

/// The device of the virtio-serial port named `wanted` (such as
/// [`provium_protocol::SERIAL_PORT_NAME`]), from the udev-style link or the names in
/// `/sys/class/virtio-ports`.
pub fn find(wanted: &str) -> Option<PathBuf> {
    let link = Path::new("/dev/virtio-ports").join(wanted);
    if link.exists() {
        return Some(link);
    }
    let ports = std::fs::read_dir("/sys/class/virtio-ports").ok()?;
    for port in ports.flatten() {
        let Ok(name) = std::fs::read_to_string(port.path().join("name")) else {
            continue;
        };
        if name.trim_end() == wanted {
            let dev = Path::new("/dev").join(port.file_name());
            if dev.exists() {
                return Some(dev);
            }
        }
    }
    None
}
