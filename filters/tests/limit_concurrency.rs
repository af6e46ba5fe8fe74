//! The concurrent-stream quota: permits, release on drop, live changes, contention.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tollgate_filters::limit::StreamQuota;

#[test]
fn permits_are_bounded_and_freed_on_drop() {
    let q = StreamQuota::new(2);
    let a = q.try_acquire().expect("first");
    let b = q.try_acquire().expect("second");
    assert!(q.try_acquire().is_none(), "third stream refused");
    assert_eq!(q.in_use(), 2);
    drop(a);
    assert_eq!(q.in_use(), 1);
    let c = q.try_acquire().expect("a slot was freed");

    q.set_max(1);
    assert!(
        q.try_acquire().is_none(),
        "lowered below the streams in flight"
    );
    drop(b);
    assert!(q.try_acquire().is_none(), "still one in flight");
    drop(c);
    assert_eq!(q.in_use(), 0);
    assert!(q.try_acquire().is_some());
    assert_eq!(q.in_use(), 0, "the temporary permit was dropped");
}

#[test]
fn never_exceeds_the_maximum_under_contention() {
    let q = StreamQuota::new(3);
    let peak = Arc::new(AtomicU32::new(0));
    let granted = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (q, peak, granted) = (q.clone(), peak.clone(), granted.clone());
            std::thread::spawn(move || {
                for _ in 0..2000 {
                    if let Some(p) = q.try_acquire() {
                        granted.fetch_add(1, Ordering::Relaxed);
                        peak.fetch_max(q.in_use(), Ordering::Relaxed);
                        std::hint::spin_loop();
                        drop(p);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(peak.load(Ordering::Relaxed) <= 3);
    assert!(granted.load(Ordering::Relaxed) > 0);
    assert_eq!(q.in_use(), 0);
}
