//! Property-based fuzzing of the agent's in-place frame reader: on any
//! byte stream, read in any pieces, [`FrameReader`] must hand out exactly
//! the frames (and the final error) that the reference
//! `provium_protocol::read_frame` gives, never panic, and never allocate
//! more than one maximal frame because a header claims a huge length.
//! (The batch decoder is fuzzed in `src/ops/batch.rs`: its entry decoder
//! is private.)
//!
//! Run with `cargo test -p provium-agent --test fuzz` (or `-- fuzz`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Read};

use proptest::collection::vec;
use proptest::prelude::*;
use provium_agent::frames::FrameReader;
use provium_protocol::{
    encode, read_frame, FrameError, HostMsg, RequestId, FRAME_HEADER_LEN, MAX_FRAME_LEN,
    RAW_ECHO_MAGIC,
};

/// Records the largest single allocation this thread makes.
struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// bookkeeping only touches a const-initialised thread local.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// A reader that hands out its bytes in the given read sizes (0 = an
/// `Interrupted` error, which readers must retry), then whatever is left.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    steps: Vec<usize>,
    step: usize,
}

impl Chunked {
    fn new(data: Vec<u8>, steps: Vec<usize>) -> Self {
        Chunked {
            data,
            pos: 0,
            steps,
            step: 0,
        }
    }
}

impl Read for Chunked {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let want = match self.steps.get(self.step) {
            Some(0) => {
                self.step += 1;
                return Err(io::ErrorKind::Interrupted.into());
            }
            Some(&n) => n,
            None => usize::MAX,
        };
        self.step += 1;
        let n = want.min(out.len()).min(self.data.len() - self.pos);
        out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// How a stream of frames ended, comparably.
#[derive(Debug, PartialEq)]
enum End {
    Clean,
    Truncated { got: usize, want: usize },
    TooLarge { len: usize },
    Other(String),
}

fn end_of(e: FrameError) -> End {
    match e {
        FrameError::Truncated { got, want } => End::Truncated { got, want },
        FrameError::TooLarge { len, .. } => End::TooLarge { len },
        other => End::Other(other.to_string()),
    }
}

/// The frames `read_frame` finds in `data`, and how the stream ended.
fn reference(data: &[u8]) -> (Vec<Vec<u8>>, End) {
    let mut cursor = data;
    let mut frames = Vec::new();
    loop {
        match read_frame(&mut cursor) {
            Ok(Some(body)) => frames.push(body),
            Ok(None) => return (frames, End::Clean),
            Err(e) => return (frames, end_of(e)),
        }
    }
}

/// The same through a [`FrameReader`]; checks each call's allocations.
fn through_reader<R: Read>(r: &mut FrameReader<R>) -> Result<(Vec<Vec<u8>>, End), String> {
    let mut frames = Vec::new();
    loop {
        LARGEST.with(|l| l.set(0));
        let next = r.next_frame().map(|f| f.map(<[u8]>::to_vec));
        let largest = LARGEST.with(Cell::get);
        // The buffer grows to one frame and its header at most (a copy of
        // the body is made above, after the reader is done).
        if largest > FRAME_HEADER_LEN + MAX_FRAME_LEN {
            return Err(format!("allocated {largest} bytes for one frame"));
        }
        match next {
            Ok(Some(body)) => frames.push(body),
            Ok(None) => return Ok((frames, End::Clean)),
            Err(e) => return Ok((frames, end_of(e))),
        }
    }
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

/// Streams of frames: host `Data` messages, bare frames of up to 1.25 MiB
/// (past the reader's initial 1 MiB buffer, so it has to move frames to
/// its front and grow), headers claiming more or fewer bytes than follow
/// (up to 4 GiB), the echo magic, and noise (in pieces or throughout).
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let claim = prop_oneof![
        4 => 0..64u32,
        1 => Just(MAX_FRAME_LEN as u32),
        1 => Just(MAX_FRAME_LEN as u32 + 1),
        1 => any::<u32>(),
    ];
    let data = (any::<u64>(), 0..3000usize, any::<u8>(), any::<bool>()).prop_map(
        |(id, len, fill, last)| HostMsg::Data {
            id: RequestId(id),
            chunk: vec![fill; len].into(),
            last,
        },
    );
    let piece = prop_oneof![
        3 => data.prop_map(|m| encode(&m).expect("encodes")),
        1 => (0..(5 * provium_protocol::CHUNK_LEN), any::<u8>()).prop_map(|(len, fill)| {
            let mut f = vec![fill; FRAME_HEADER_LEN + len];
            f[..FRAME_HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
            f
        }),
        2 => (claim, bytes(80)).prop_map(|(len, body)| {
            let mut f = len.to_le_bytes().to_vec();
            f.extend(body);
            f
        }),
        1 => bytes(6),
        1 => Just(RAW_ECHO_MAGIC.to_vec()),
    ];
    prop_oneof![
        4 => vec(piece, 0..8).prop_map(|p| p.concat()),
        1 => bytes(64),
    ]
}

fn read_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(
        prop_oneof![Just(0usize), 1..8usize, 1..5000usize, Just(usize::MAX)],
        0..32,
    )
}

/// Cases per property. Each builds a reader, whose first read zero-fills
/// its 1 MiB buffer: ~5 ms in an unoptimised test build, which is what
/// bounds the count here.
const CASES: u32 = 600;

/// `cases` per property, unless `PROPTEST_CASES` asks for a longer run.
fn config(cases: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            cases
        },
        failure_persistence: None,
        ..default
    }
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn fuzz_frame_reader_matches_read_frame(data in stream(), steps in read_sizes()) {
        let expected = reference(&data);
        let mut r = FrameReader::new(Chunked::new(data, steps));
        prop_assert_eq!(through_reader(&mut r), Ok(expected));
    }

    #[test]
    fn fuzz_frame_reader_after_magic_check(data in stream(), steps in read_sizes()) {
        // The check consumes the magic only when the stream starts with
        // it; either way the frames after it are the stream's.
        let mut r = FrameReader::new(Chunked::new(data.clone(), steps));
        let matched = r.starts_with(RAW_ECHO_MAGIC).expect("in-memory read");
        prop_assert_eq!(matched, data.starts_with(RAW_ECHO_MAGIC));
        let rest = if matched { &data[RAW_ECHO_MAGIC.len()..] } else { &data[..] };
        prop_assert_eq!(through_reader(&mut r), Ok(reference(rest)));
    }
}
