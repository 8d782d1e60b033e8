//! Heap bytes per presence member in the memory engine, counted by a global allocator wrapper:
//! MEMBERS members (UUID client ids as the server makes them, user ids `user-<n>` shared by two
//! connections each, no info, then with a 40-byte info) join one channel; the heap grown by
//! the store, divided by the members, is the presence cost of a member (the copy of its
//! ClientInfo included; the session's own copy is not counted).
//!
//!   cargo run -p kilat-core --example presence_memory [MEMBERS]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use kilat_core::engine::PresenceStore;
use kilat_core::engine::memory::MemoryPresence;
use kilat_protocol::ClientInfo;
use kilat_protocol::types::raw_json;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator; only counts the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn uuid(n: u64) -> String {
    let h = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (h >> 20) & 0xfff,
        n
    )
}

/// Runs `f` to completion (the memory store's futures are ready at once).
fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn measure(members: u64, info: Option<&str>) -> f64 {
    let store = MemoryPresence::new();
    // Counted from here: the members' strings, moved into the store, are part of its cost (the
    // vector holding them in between is freed by the time `after` is read).
    let before = LIVE.load(Ordering::Relaxed);
    let infos: Vec<ClientInfo> = (0..members)
        .map(|n| ClientInfo {
            client: uuid(n),
            user: format!("user-{}", n / 2),
            info: info.map(|i| raw_json(i).expect("json")),
        })
        .collect();
    for info in infos {
        // The store keeps the ClientInfo it is given: moved in here, so its strings count.
        block_on(store.add("big:room", info, Duration::from_secs(60))).expect("add");
    }
    let after = LIVE.load(Ordering::Relaxed);
    let stats = block_on(store.stats("big:room")).expect("stats");
    assert_eq!(u64::from(stats.num_clients), members);
    (after - before) as f64 / members as f64
}

fn main() {
    let members: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let bare = measure(members, None);
    let with_info = measure(members, Some(r#"{"name":"Ada Lovelace","team":"blue"}"#));
    println!("memory engine, {members} members of one channel:");
    println!("  {bare:.0} bytes per member (UUID client id, 9-byte user id, no info)");
    println!("  {with_info:.0} bytes per member with a 40-byte info");
}
