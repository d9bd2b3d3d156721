//! read_file of a 1 GiB file streams in constant memory.
//! (Its own test binary, so the peak RSS is not shared with other tests.)

mod common;

use common::{bytes, start, TempDir};
use provium_protocol::{AgentMsg, Op, Reply, CHUNK_LEN, CH_SIZE_HINT};

fn peak_rss_kib() -> i64 {
    // SAFETY: rusage is plain old data and getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss
}

#[test]
fn one_gib_file_streams_in_constant_memory() {
    const SIZE: u64 = 1 << 30;
    let dir = TempDir::new("gib");
    let p = dir.path("sparse");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(SIZE).unwrap();
    drop(f);
    let before = peak_rss_kib();
    let mut h = start();
    let id = h.start_call(Op::ReadFile { path: bytes(&p) });
    let mut total: u64 = 0;
    let mut frames = 0;
    loop {
        match h.recv() {
            AgentMsg::Data {
                id: got,
                channel: CH_SIZE_HINT,
                chunk,
            } => {
                assert_eq!(got, id);
                assert_eq!(frames, 0, "the size hint comes first");
                assert_eq!(u64::from_le_bytes(chunk[..].try_into().unwrap()), SIZE);
            }
            AgentMsg::Data { id: got, chunk, .. } => {
                assert_eq!(got, id);
                assert!(chunk.len() <= CHUNK_LEN);
                if frames % 256 == 0 {
                    assert!(chunk.iter().all(|&b| b == 0));
                }
                total += chunk.len() as u64;
                frames += 1;
            }
            AgentMsg::Reply { id: got, result } => {
                assert_eq!(got, id);
                let Ok(Reply::Bytes(tail)) = result else {
                    panic!("{result:?}")
                };
                total += tail.len() as u64;
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(total, SIZE);
    assert_eq!(frames, SIZE as usize / CHUNK_LEN);
    let grown_mib = (peak_rss_kib() - before) / 1024;
    assert!(grown_mib < 64, "peak RSS grew by {grown_mib} MiB");
}
