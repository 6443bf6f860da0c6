//! Queue allocation among a consumer group's members: RocketMQ's
//! `AllocateMessageQueueAveragely`.
//!
//! Every member computes the same answer from the same sorted inputs, so a queue has
//! one owner once all members have seen the same member list: queues and consumer ids
//! are sorted, and member `i` gets a contiguous block, the first `len % members` blocks
//! one longer than the rest.

/// The queues `current` owns. `queues` and `consumer_ids` need not be sorted; both are
/// sorted here. A consumer missing from `consumer_ids` gets nothing.
pub fn allocate_averagely<Q: Ord + Clone>(
    current: &str,
    queues: &[Q],
    consumer_ids: &[String],
) -> Vec<Q> {
    let mut queues = queues.to_vec();
    queues.sort();
    let mut ids: Vec<&str> = consumer_ids.iter().map(String::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    let Some(index) = ids.iter().position(|id| *id == current) else {
        return Vec::new();
    };
    if queues.is_empty() {
        return Vec::new();
    }
    let (n_queues, n_ids) = (queues.len(), ids.len());
    let rem = n_queues % n_ids;
    let average = if n_queues <= n_ids {
        1
    } else if rem > 0 && index < rem {
        n_queues / n_ids + 1
    } else {
        n_queues / n_ids
    };
    let start = if rem > 0 && index < rem {
        index * average
    } else {
        index * average + rem
    };
    let range = average.min(n_queues.saturating_sub(start));
    (0..range)
        .map(|i| queues[(start + i) % n_queues].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    fn alloc(current: usize, queues: usize, members: usize) -> Vec<usize> {
        let qs: Vec<usize> = (0..queues).collect();
        allocate_averagely(&format!("c{current}"), &qs, &ids(members))
    }

    /// Proves the blocks match RocketMQ's AllocateMessageQueueAveragely on its known
    /// cases: 8 queues over 3 consumers is 3/3/2, 4 over 4 is one each, 2 over 3
    /// leaves the third idle, 16 over 5 is 4/3/3/3/3.
    #[test]
    fn matches_rocketmq_results() {
        assert_eq!(alloc(0, 8, 3), [0, 1, 2]);
        assert_eq!(alloc(1, 8, 3), [3, 4, 5]);
        assert_eq!(alloc(2, 8, 3), [6, 7]);
        for i in 0..4 {
            assert_eq!(alloc(i, 4, 4), [i]);
        }
        assert_eq!(alloc(0, 2, 3), [0]);
        assert_eq!(alloc(1, 2, 3), [1]);
        assert_eq!(alloc(2, 2, 3), Vec::<usize>::new());
        assert_eq!(alloc(0, 16, 5), [0, 1, 2, 3]);
        assert_eq!(alloc(1, 16, 5), [4, 5, 6]);
        assert_eq!(alloc(4, 16, 5), [13, 14, 15]);
        assert_eq!(alloc(0, 0, 2), Vec::<usize>::new());
    }

    /// Proves that, for many shapes, every queue has exactly one owner and a consumer
    /// not in the list owns nothing; the input order does not matter.
    #[test]
    fn every_queue_has_exactly_one_owner() {
        for queues in 0..20 {
            for members in 1..8 {
                let mut owners = vec![0; queues];
                let mut shuffled_ids = ids(members);
                shuffled_ids.reverse();
                let mut qs: Vec<usize> = (0..queues).collect();
                qs.reverse();
                for m in 0..members {
                    for q in allocate_averagely(&format!("c{m}"), &qs, &shuffled_ids) {
                        owners[q] += 1;
                    }
                }
                assert!(owners.iter().all(|&n| n == 1), "{queues} over {members}");
                assert!(allocate_averagely("stranger", &qs, &shuffled_ids).is_empty());
            }
        }
    }
}
