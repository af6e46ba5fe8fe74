//! Joining response data frames that are already waiting into one chunk.
//!
//! An upstream streaming small messages sends many small DATA frames, and a proxy that
//! forwards them one for one makes the client read, account and wake for each. When a
//! poll finds a small data frame, the frames ready behind it are joined to it, up to
//! [`JOIN_UP_TO`] bytes. Only what is ready is joined: this never waits for more, so no
//! message is delayed.

use super::body::BodyError;
use bytes::{Bytes, BytesMut};
use http_body::Frame;
use std::task::{Context, Poll, ready};

/// Joined chunks stay within HTTP/2's default largest frame, so each is still one frame.
pub(super) const JOIN_UP_TO: usize = 16 * 1024;

/// What a body poll returns.
pub(super) type Polled = Option<Result<Frame<Bytes>, BodyError>>;

/// A body whose frames can be joined.
pub(super) trait FrameSource {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Polled>;
    /// Whether its data frames are joined at all.
    fn joins(&self) -> bool;
    fn is_end_stream(&self) -> bool;
}

/// Polls `source` for a frame; a data frame under half of [`JOIN_UP_TO`] is joined with
/// the data frames ready behind it. Whatever ends the join (trailers, an error, the
/// end, data that does not fit) is put in `held`, for the caller's next poll.
pub(super) fn poll_joined<S: FrameSource>(
    source: &mut S,
    cx: &mut Context<'_>,
    held: &mut Option<Polled>,
) -> Poll<Polled> {
    let first = match ready!(source.poll(cx)) {
        Some(Ok(frame)) if source.joins() => match frame.into_data() {
            Ok(data) if data.len() < JOIN_UP_TO / 2 && !source.is_end_stream() => data,
            Ok(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
            Err(frame) => return Poll::Ready(Some(Ok(frame))),
        },
        other => return Poll::Ready(other),
    };
    let mut joined: Option<BytesMut> = None;
    while let Poll::Ready(next) = source.poll(cx) {
        let more = match next {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    *held = Some(Some(Ok(frame)));
                    break;
                }
            },
            other => {
                *held = Some(other);
                break;
            }
        };
        let len = joined.as_ref().map_or(first.len(), BytesMut::len);
        if len + more.len() > JOIN_UP_TO {
            *held = Some(Some(Ok(Frame::data(more))));
            break;
        }
        joined
            .get_or_insert_with(|| {
                let mut buf = BytesMut::with_capacity(JOIN_UP_TO);
                buf.extend_from_slice(&first);
                buf
            })
            .extend_from_slice(&more);
        if source.is_end_stream() {
            break;
        }
    }
    Poll::Ready(Some(Ok(Frame::data(
        joined.map_or(first, BytesMut::freeze),
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::task::Waker;

    /// A scripted source: `None` in the script is a poll that finds nothing ready.
    struct Script {
        steps: VecDeque<Option<Polled>>,
        joins: bool,
        polls: usize,
    }

    impl FrameSource for Script {
        fn poll(&mut self, _: &mut Context<'_>) -> Poll<Polled> {
            self.polls += 1;
            match self.steps.pop_front() {
                Some(Some(polled)) => Poll::Ready(polled),
                Some(None) => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
        fn joins(&self) -> bool {
            self.joins
        }
        fn is_end_stream(&self) -> bool {
            self.steps.is_empty()
        }
    }

    fn data(n: usize, byte: u8) -> Option<Polled> {
        Some(Some(Ok(Frame::data(Bytes::from(vec![byte; n])))))
    }

    fn trailers() -> Option<Polled> {
        let mut map = http::HeaderMap::new();
        map.insert("grpc-status", http::HeaderValue::from_static("0"));
        Some(Some(Ok(Frame::trailers(map))))
    }

    /// Reads the body to its end as hyper would: each poll's data length, or `T` for
    /// trailers, `P` for a poll that found nothing, `E` for an error.
    fn drain(steps: Vec<Option<Polled>>, joins: bool) -> (Vec<String>, Vec<u8>, usize) {
        let mut src = Script {
            steps: steps.into(),
            joins,
            polls: 0,
        };
        let mut cx = Context::from_waker(Waker::noop());
        let (mut held, mut seen, mut bytes) = (None, Vec::new(), Vec::new());
        loop {
            let polled = match held.take() {
                Some(h) => Poll::Ready(h),
                None => poll_joined(&mut src, &mut cx, &mut held),
            };
            match polled {
                Poll::Pending => seen.push("P".to_string()),
                Poll::Ready(None) => break,
                Poll::Ready(Some(Err(_))) => seen.push("E".to_string()),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(d) => {
                        seen.push(d.len().to_string());
                        bytes.extend_from_slice(&d);
                    }
                    Err(_) => seen.push("T".to_string()),
                },
            }
            if seen.len() > 100 {
                panic!("no end: {seen:?}");
            }
        }
        (seen, bytes, src.polls)
    }

    #[test]
    fn ready_frames_are_joined_and_nothing_waits_for_more() {
        let steps = vec![
            data(69, 1),
            data(69, 2),
            data(69, 3),
            None,
            data(10, 4),
            trailers(),
        ];
        let (seen, bytes, _) = drain(steps, true);
        // Three ready frames go as one; the poll that found nothing ends the join, so
        // the frame after it is not waited for: the next poll returns it.
        assert_eq!(seen, ["207", "10", "T"]);
        let mut want = [vec![1; 69], vec![2; 69], vec![3; 69], vec![4; 10]].concat();
        assert_eq!(bytes, want);
        // A source that does not join passes every frame on as it is.
        let steps = vec![data(69, 1), data(69, 2), data(10, 4), trailers()];
        let (seen, bytes, _) = drain(steps, false);
        assert_eq!(seen, ["69", "69", "10", "T"]);
        want.drain(138..207);
        assert_eq!(bytes, want);
    }

    #[test]
    fn a_join_stays_within_one_frame_and_large_frames_are_not_copied() {
        let big = JOIN_UP_TO / 2;
        let steps = vec![
            data(6000, 1),
            data(6000, 2),
            data(6000, 3),
            data(big, 4),
            data(1, 5),
        ];
        let (seen, bytes, _) = drain(steps, true);
        // 12,000 fit; the third would pass 16 KiB and starts the next chunk; a frame of
        // half the limit or more goes out alone, and the one behind it is not waited for.
        assert_eq!(seen, ["12000", "6000", &big.to_string(), "1"]);
        assert_eq!(bytes.len(), 18001 + big);
    }

    #[test]
    fn random_scripts_keep_every_byte_in_order_and_every_chunk_within_bounds() {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for _ in 0..2_000 {
            let mut steps = Vec::new();
            let (mut sent, mut sizes): (Vec<u8>, Vec<usize>) = (Vec::new(), Vec::new());
            for i in 0..rng.usize(1..40) {
                if rng.u8(..) < 40 {
                    steps.push(None);
                    continue;
                }
                let n = if rng.bool() {
                    rng.usize(0..200)
                } else {
                    rng.usize(0..20_000)
                };
                sent.extend(std::iter::repeat_n(i as u8, n));
                sizes.push(n);
                steps.push(data(n, i as u8));
            }
            let (seen, got, _) = drain(steps.into_iter().chain([trailers()]).collect(), true);
            assert_eq!(got, sent, "bytes lost, added or reordered");
            assert_eq!(seen.last().map(String::as_str), Some("T"));
            let chunks: Vec<usize> = seen.iter().filter_map(|c| c.parse().ok()).collect();
            // Joining never splits a frame; only a frame that came larger than the
            // bound leaves larger than it, as it came.
            assert!(chunks.len() <= sizes.len(), "{seen:?} from {sizes:?}");
            for chunk in chunks {
                assert!(chunk <= JOIN_UP_TO || sizes.contains(&chunk), "{seen:?}");
            }
        }
    }

    #[test]
    fn trailers_an_error_and_the_end_come_after_the_data_before_them() {
        let err = Some(Some(Err(BodyError::Idle(std::time::Duration::from_secs(
            1,
        )))));
        let (seen, _, _) = drain(vec![data(5, 1), data(5, 2), err, data(5, 3)], true);
        assert_eq!(seen, ["10", "E", "5"]);
        let (seen, _, _) = drain(vec![data(5, 1), trailers()], true);
        assert_eq!(seen, ["5", "T"]);
        // At the end of the source the join stops without another poll.
        let (seen, _, polls) = drain(vec![data(5, 1), data(5, 2)], true);
        assert_eq!(seen, ["10"]);
        assert_eq!(polls, 3, "two frames and the final end-of-body poll");
    }
}
