//! An Aho-Corasick automaton over the bytes of a request's stop sequences, built once per
//! request. Fed one byte at a time, it always knows the longest suffix of the text so far that
//! is a prefix of some stop (what must be held back) and the longest stop that ends at this
//! byte (a match), whatever the number of stops: the cost per byte is one transition plus the
//! failure links it follows, and those are paid for by earlier transitions (each link followed
//! shortens the current suffix, which grows by at most one byte per byte fed), so a stream of
//! `n` bytes costs at most `2n` steps.

/// One state: a prefix of at least one stop.
#[derive(Debug)]
struct Node {
    /// This node's transitions are `edges[first..first + count]`, sorted by byte.
    first: u32,
    count: u32,
    /// The longest proper suffix of this prefix that is a prefix of some stop.
    fail: u32,
    /// Length of this prefix in bytes.
    depth: u32,
    /// Length of the longest stop that is a suffix of this prefix (0: none).
    match_len: u32,
}

#[derive(Debug)]
pub struct Automaton {
    nodes: Vec<Node>,
    edges: Vec<(u8, u32)>,
}

/// The root: the empty prefix.
pub const START: u32 = 0;

impl Automaton {
    /// Builds the automaton in time and space linear in the stops' total length (times the
    /// log of the alphabet for the sorted transitions). Empty stops are ignored.
    pub fn new(stops: &[String]) -> Automaton {
        // The trie, children as (byte, node) lists, then flattened.
        let mut children: Vec<Vec<(u8, u32)>> = vec![Vec::new()];
        let mut terminal: Vec<u32> = vec![0];
        let mut depth: Vec<u32> = vec![0];
        for stop in stops {
            let mut node = 0usize;
            for &b in stop.as_bytes() {
                node = match children[node].binary_search_by_key(&b, |e| e.0) {
                    Ok(i) => children[node][i].1 as usize,
                    Err(i) => {
                        let next = children.len();
                        children[node].insert(i, (b, index(next)));
                        children.push(Vec::new());
                        terminal.push(0);
                        depth.push(depth[node] + 1);
                        next
                    }
                };
            }
            if node != 0 {
                terminal[node] = depth[node];
            }
        }
        let mut nodes = Vec::with_capacity(children.len());
        let mut edges = Vec::with_capacity(children.len().saturating_sub(1));
        for (i, c) in children.iter().enumerate() {
            nodes.push(Node {
                first: index(edges.len()),
                count: index(c.len()),
                fail: START,
                depth: depth[i],
                match_len: terminal[i],
            });
            edges.extend_from_slice(c);
        }
        let mut automaton = Automaton { nodes, edges };
        automaton.link();
        automaton
    }

    /// Failure links and inherited matches, breadth first (a node's link is shallower).
    fn link(&mut self) {
        let mut queue = std::collections::VecDeque::new();
        for &(_, child) in self.children(START) {
            queue.push_back(child);
        }
        while let Some(node) = queue.pop_front() {
            let (first, count) = (
                self.nodes[node as usize].first,
                self.nodes[node as usize].count,
            );
            for e in first..first + count {
                let (byte, child) = self.edges[e as usize];
                let mut f = self.nodes[node as usize].fail;
                let fail = loop {
                    if let Some(next) = self.child(f, byte) {
                        break next;
                    }
                    if f == START {
                        break START;
                    }
                    f = self.nodes[f as usize].fail;
                };
                let inherited = self.nodes[fail as usize].match_len;
                let c = &mut self.nodes[child as usize];
                c.fail = fail;
                if c.match_len == 0 {
                    c.match_len = inherited;
                }
                queue.push_back(child);
            }
        }
    }

    fn children(&self, node: u32) -> &[(u8, u32)] {
        let n = &self.nodes[node as usize];
        &self.edges[n.first as usize..(n.first + n.count) as usize]
    }

    fn child(&self, node: u32, byte: u8) -> Option<u32> {
        let c = self.children(node);
        c.binary_search_by_key(&byte, |e| e.0).ok().map(|i| c[i].1)
    }

    /// The state after `byte`; `steps` counts the transitions and failure links taken.
    pub fn step(&self, mut state: u32, byte: u8, steps: &mut u64) -> u32 {
        loop {
            *steps += 1;
            if let Some(next) = self.child(state, byte) {
                return next;
            }
            if state == START {
                return START;
            }
            state = self.nodes[state as usize].fail;
        }
    }

    /// Bytes of text that may still become a stop: the length of the state's prefix.
    pub fn depth(&self, state: u32) -> usize {
        self.nodes[state as usize].depth as usize
    }

    /// Length of the longest stop ending here, if one does.
    pub fn matched(&self, state: u32) -> Option<usize> {
        match self.nodes[state as usize].match_len {
            0 => None,
            n => Some(n as usize),
        }
    }
}

/// Node and edge counts are bounded by the stops' total length, which the API limits far below
/// `u32::MAX`.
fn index(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::{Automaton, START};

    fn feed(a: &Automaton, text: &str) -> (Vec<Option<usize>>, usize, u64) {
        let (mut state, mut steps) = (START, 0);
        let mut matches = Vec::new();
        for &b in text.as_bytes() {
            state = a.step(state, b, &mut steps);
            matches.push(a.matched(state));
        }
        (matches, a.depth(state), steps)
    }

    #[test]
    fn matches_end_where_a_stop_ends_and_the_longest_wins() {
        let a = Automaton::new(&["he".into(), "she".into(), "hers".into(), "e".into()]);
        let (m, depth, _) = feed(&a, "ushers");
        assert_eq!(m, [None, None, None, Some(3), None, Some(4)]);
        assert_eq!(depth, 4, "\"hers\" is still the state");
        let (_, depth, _) = feed(&a, "xsh");
        assert_eq!(depth, 2, "\"sh\" may become \"she\"");
    }

    #[test]
    fn steps_stay_within_twice_the_bytes_fed_on_adversarial_stops() {
        // Stops built to make a naive matcher re-scan: a run of 'a's that fails at its end.
        let stops: Vec<String> = (1..=64)
            .map(|n| format!("{}b", "a".repeat(n * 4)))
            .collect();
        let a = Automaton::new(&stops);
        let text = "a".repeat(100_000) + "c" + &"a".repeat(1000);
        let (_, _, steps) = feed(&a, &text);
        assert!(
            steps <= 2 * text.len() as u64,
            "{steps} steps for {} bytes",
            text.len()
        );
    }
}
