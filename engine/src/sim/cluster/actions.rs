//! Executing the core's actions against the fake storage and network, and the per-step
//! checks that run after every batch.

use rand::Rng;

use super::{Cause, Cluster, SimSubmit};
use crate::node::submits::Outcome;
use crate::raft::{Action, Index, MessageBody, ReplicaId, Role};
use crate::sim::checker::{self, Violation};
use crate::sim::network::Packet;
use crate::sim::storage::Entry;

impl Cluster {
    pub(super) fn execute(
        &mut self,
        r: usize,
        cause: &Cause,
        actions: &[Action],
    ) -> Result<(), Violation> {
        let id = self.nodes[r].id;
        let contract = |details: String| Violation {
            invariant: checker::DRIVER_CONTRACT,
            details,
        };
        // Whether the replica leads at this point of the batch (it may step down mid-batch).
        let mut leading = self.nodes[r].leader_term.is_some();
        for action in actions {
            trace!(self, "r{id} {action:?}");
            match action {
                Action::RejoinComplete { index } => {
                    let storage = &mut self.nodes[r].storage;
                    if !storage.rejoining() {
                        return Err(contract(format!("r{id} completed a rejoin without a wipe")));
                    }
                    if (storage.durable_match_len() as Index) < *index {
                        return Err(contract(format!(
                            "r{id} completed its rejoin at {index} with {} entries durable",
                            storage.durable_match_len()
                        )));
                    }
                    storage.finish_rejoin();
                    self.stats.rejoins += 1;
                    // From here its log counts: it must hold every committed entry.
                    self.check_durable(1)?;
                }
                Action::PersistHardState(hs) => {
                    let storage = &mut self.nodes[r].storage;
                    checker::check_vote_stability(id, storage.hard_state(), *hs)?;
                    storage.persist_hard_state(*hs);
                }
                Action::AppendProposal {
                    term,
                    first_index,
                    count,
                } => {
                    let (term, first_index, count) = (*term, *first_index, *count);
                    if first_index != self.nodes[r].storage.last_index() + 1 {
                        return Err(contract(format!(
                            "r{id} AppendProposal at {first_index} after last index {}",
                            self.nodes[r].storage.last_index()
                        )));
                    }
                    if term > self.nodes[r].storage.hard_state().term {
                        return Err(Violation {
                            invariant: checker::HARD_STATE_FIRST,
                            details: format!("r{id} appends in term {term} before persisting it"),
                        });
                    }
                    let proposal = match cause {
                        Cause::Propose {
                            term: t,
                            first_index: f,
                            items,
                        } if *t == term && *f == first_index && items.len() as u64 == count => {
                            self.proposal_appended = true;
                            Some(*items)
                        }
                        _ => None,
                    };
                    for k in 0..count {
                        let entry = match proposal {
                            Some(items) => Entry {
                                term,
                                len: items[k as usize].1,
                                pid: items[k as usize].0,
                            },
                            None => {
                                // An entry the core made up (the no-op of a new leader).
                                self.next_pid += 1;
                                Entry {
                                    term,
                                    len: 0,
                                    pid: self.next_pid - 1,
                                }
                            }
                        };
                        self.append(r, first_index + k, entry)?;
                    }
                }
                Action::Truncate { index } => {
                    let keep = *index;
                    let node = &self.nodes[r];
                    if leading {
                        return Err(Violation {
                            invariant: checker::LEADER_COMPLETENESS,
                            details: format!("r{id}, a leader, truncates its log after {keep}"),
                        });
                    }
                    let chosen = self.hist.chosen();
                    let removed = node.storage.entry(keep + 1);
                    if keep < node.commit
                        || (removed.is_some() && chosen.get(keep as usize) == removed.as_ref())
                    {
                        return Err(Violation {
                            invariant: checker::STATE_MACHINE_SAFETY,
                            details: format!(
                                "r{id} truncates committed entry {removed:?} at {} (commit {})",
                                keep + 1,
                                node.commit
                            ),
                        });
                    }
                    self.nodes[r].storage.truncate(keep as usize);
                    if !self.silent_truncations {
                        let mut answered = Vec::new();
                        self.nodes[r]
                            .submits
                            .truncated(keep, |s, outcome, last| answered.push((s, outcome, last)));
                        self.check_answers(r, answered)?;
                    }
                }
                Action::Append {
                    first_index,
                    last_index,
                } => {
                    let (first, last) = (*first_index, *last_index);
                    let Cause::Message(packet) = cause else {
                        return Err(contract(format!("r{id} Append outside AppendEntries")));
                    };
                    let MessageBody::AppendEntries {
                        prev_index,
                        entries,
                        ..
                    } = &packet.msg.body
                    else {
                        return Err(contract(format!("r{id} Append outside AppendEntries")));
                    };
                    let prev = *prev_index;
                    let local_last = self.nodes[r].storage.last_index();
                    if first != local_last + 1
                        || first <= prev
                        || first > last
                        || last > prev + entries.len() as Index
                    {
                        return Err(contract(format!(
                            "r{id} Append {first}..={last} of entries {}..={} after local \
                             last index {local_last}",
                            prev + 1,
                            prev + entries.len() as Index
                        )));
                    }
                    for index in first..=last {
                        let entry = packet.payload[(index - prev - 1) as usize];
                        self.append(r, index, entry)?;
                    }
                }
                Action::Sync => {
                    let delay = self.rng.gen_range(0..=self.scenario.sync_delay_ticks_max);
                    self.nodes[r].storage.start_sync(self.now, delay);
                }
                Action::Send(msg) => self.send(r, msg)?,
                Action::Apply { first, last } => self.apply(r, *first, *last)?,
                Action::ReadReady { ctx, index } => {
                    let Some(issued) = self.nodes[r].reads.remove(ctx) else {
                        return Err(Violation {
                            invariant: checker::LINEARIZABLE_READ,
                            details: format!("r{id} answers read {ctx}, which is not pending"),
                        });
                    };
                    checker::check_read(id, *ctx, issued, *index)?;
                    self.stats.reads_served += 1;
                }
                Action::ReadFailed { ctx, .. } => {
                    if self.nodes[r].reads.remove(ctx).is_none() {
                        return Err(Violation {
                            invariant: checker::LINEARIZABLE_READ,
                            details: format!("r{id} fails read {ctx}, which is not pending"),
                        });
                    }
                    self.stats.reads_failed += 1;
                }
                Action::RoleChanged { role, leader, .. } => {
                    leading = *role == Role::Leader;
                    if *role == Role::Leader && *leader != Some(id) {
                        return Err(contract(format!(
                            "r{id} becomes leader naming {leader:?} as leader"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Append one entry at `index` to replica `r`'s log, checking log matching.
    fn append(&mut self, r: usize, index: Index, entry: Entry) -> Result<(), Violation> {
        let node = &mut self.nodes[r];
        debug_assert_eq!(index, node.storage.last_index() + 1);
        let prev_term = node.storage.term_at(index - 1).expect("contiguous log");
        self.hist
            .check_log_matching(node.id, index, entry, prev_term)?;
        node.storage.append(entry);
        Ok(())
    }

    fn send(&mut self, r: usize, msg: &crate::raft::Message) -> Result<(), Violation> {
        let id = self.nodes[r].id;
        let n = self.nodes.len() as ReplicaId;
        if msg.from != id || msg.to == id || msg.to == 0 || msg.to > n {
            return Err(Violation {
                invariant: checker::DRIVER_CONTRACT,
                details: format!("r{id} sends a misaddressed {msg:?}"),
            });
        }
        let storage = &self.nodes[r].storage;
        let hs = storage.hard_state();
        let not_durable = |what: &str| Violation {
            invariant: checker::HARD_STATE_FIRST,
            details: format!("r{id} sends {msg:?} {what}; durable hard state is {hs:?}"),
        };
        let mut payload = Vec::new();
        match &msg.body {
            MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { .. } => {}
            _ if msg.term > hs.term => return Err(not_durable("in a term not yet durable")),
            MessageBody::Vote { .. } if hs.term != msg.term || hs.vote != Some(id) => {
                return Err(not_durable("before its self-vote is durable"));
            }
            MessageBody::VoteResponse { granted: true } if hs.vote != Some(msg.to) => {
                return Err(not_durable("granting a vote that is not durable"));
            }
            MessageBody::AppendResponse {
                index,
                reject: None,
            } => checker::check_ack_durable(id, msg.to, *index, storage.durable_match_len())?,
            MessageBody::AppendEntries {
                prev_index,
                prev_term,
                entries,
                ..
            } => {
                if storage.term_at(*prev_index) != Some(*prev_term) {
                    return Err(Violation {
                        invariant: checker::DRIVER_CONTRACT,
                        details: format!(
                            "r{id} sends {msg:?} but holds term {:?} at {prev_index}",
                            storage.term_at(*prev_index)
                        ),
                    });
                }
                for (k, meta) in entries.iter().enumerate() {
                    let index = prev_index + 1 + k as Index;
                    match storage.entry(index) {
                        Some(entry) if entry.meta() == *meta => payload.push(entry),
                        other => {
                            return Err(Violation {
                                invariant: checker::DRIVER_CONTRACT,
                                details: format!(
                                    "r{id} sends entry {meta:?} at {index} but holds {other:?}"
                                ),
                            })
                        }
                    }
                }
            }
            _ => {}
        }
        let packet = Packet {
            msg: msg.clone(),
            payload,
        };
        self.net
            .send(r, msg.to as usize - 1, packet, self.now, &mut self.rng);
        Ok(())
    }

    fn apply(&mut self, r: usize, first: Index, last: Index) -> Result<(), Violation> {
        let id = self.nodes[r].id;
        let commit = self.replica(r).commit();
        let expected = self.nodes[r].applied_next.unwrap_or(first);
        if first == 0 || first > last || last > commit || first != expected {
            return Err(Violation {
                invariant: checker::STATE_MACHINE_SAFETY,
                details: format!(
                    "r{id} applies {first}..={last} with commit {commit}, expected next \
                     {expected}"
                ),
            });
        }
        self.observe_commit(r, last)?;
        for index in first..=last {
            let entry = self.nodes[r]
                .storage
                .entry(index)
                .expect("checked by observe_commit");
            self.hist.check_apply(id, index, entry)?;
            if let Some(mask) = self.tracked.get_mut(&entry.pid) {
                *mask |= 1 << r;
            }
        }
        self.nodes[r].applied_next = Some(last + 1);
        Ok(())
    }

    /// Replica `r` holds entries up to `upto` as committed: match them against the
    /// committed sequence, extending it (and checking durability and leader completeness
    /// for the newly committed entries).
    fn observe_commit(&mut self, r: usize, upto: Index) -> Result<(), Violation> {
        let from = self.nodes[r].commit_checked + 1;
        if upto < from {
            return Ok(());
        }
        let id = self.nodes[r].id;
        let committer_term = self.replica(r).term();
        for index in from..=upto {
            let entry = self.nodes[r].storage.entry(index);
            if self.hist.check_commit(id, index, entry)? {
                self.check_durable(index)?;
                for l in 0..self.nodes.len() {
                    let Some(term) = self.nodes[l].leader_term else {
                        continue;
                    };
                    if term >= committer_term {
                        let log = self.nodes[l].storage.log();
                        self.hist
                            .check_leader_completeness(self.nodes[l].id, term, log, index)?;
                    }
                }
            }
        }
        self.nodes[r].commit_checked = upto;
        Ok(())
    }

    /// What replica `r` answered its clients, each answer with the submit and the index
    /// its entries end at: `Ok` only if every entry is committed as proposed, "replaced"
    /// only if none is (the client sends it again, and must not see it applied twice).
    fn check_answers(
        &mut self,
        r: usize,
        answered: Vec<(SimSubmit, Outcome, Index)>,
    ) -> Result<(), Violation> {
        for (submit, outcome, last) in answered {
            let id = self.nodes[r].id;
            let chosen = self.hist.chosen();
            let committed: Vec<bool> = (submit.first_index..=last)
                .zip(&submit.pids)
                .map(|(index, &pid)| chosen.get(index as usize - 1).is_some_and(|e| e.pid == pid))
                .collect();
            let wrong = match outcome {
                Outcome::Committed => {
                    self.stats.answered_ok += 1;
                    committed.iter().any(|&c| !c)
                }
                Outcome::Replaced => {
                    self.stats.answered_replaced += 1;
                    committed.iter().any(|&c| c)
                }
                Outcome::Unknown => {
                    self.stats.answered_unknown += 1;
                    false
                }
            };
            if wrong {
                return Err(Violation {
                    invariant: checker::CLIENT_ANSWERS,
                    details: format!(
                        "r{id} answered {outcome:?} for pids {:?} at {}..={last}, committed as \
                         proposed: {committed:?} (commit {})",
                        submit.pids,
                        submit.first_index,
                        self.replica(r).commit()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Answers replica `r`'s proposals up to its commit index, as its node would.
    fn answer_committed(&mut self, r: usize) -> Result<(), Violation> {
        let mut answered = Vec::new();
        let node = &mut self.nodes[r];
        let replica = node.replica.as_ref().expect("up");
        node.submits.committed(
            replica.commit(),
            |i| replica.term_at(i),
            |s, outcome, last| answered.push((s, outcome, last)),
        );
        self.check_answers(r, answered)
    }

    /// Checks after every step of replica `r`.
    pub(super) fn after_step(&mut self, r: usize) -> Result<(), Violation> {
        self.stats.steps += 1;
        let id = self.nodes[r].id;
        let replica = self.replica(r);
        let storage = &self.nodes[r].storage;
        let last = storage.last_index();
        if replica.last_index() != last || replica.term_at(last) != storage.term_at(last) {
            return Err(Violation {
                invariant: checker::DRIVER_CONTRACT,
                details: format!(
                    "r{id}'s core log ends at ({}, {:?}), the driver's at ({last}, {:?})",
                    replica.last_index(),
                    replica.term_at(replica.last_index()),
                    storage.term_at(last)
                ),
            });
        }
        let (core_hs, disk_hs) = (replica.hard_state(), storage.hard_state());
        if core_hs.term != disk_hs.term || core_hs.vote != disk_hs.vote {
            return Err(Violation {
                invariant: checker::HARD_STATE_FIRST,
                details: format!("r{id} runs with {core_hs:?} but persisted {disk_hs:?}"),
            });
        }
        let commit = replica.commit();
        let role = replica.role();
        let term = replica.term();
        checker::check_commit_monotonic(id, self.nodes[r].commit, commit)?;
        self.nodes[r].commit = commit;
        self.observe_commit(r, commit)?;
        self.answer_committed(r)?;
        if role == Role::Leader {
            self.hist.check_election_safety(id, term)?;
            if self.nodes[r].leader_term != Some(term) {
                trace!(self, "r{id} leads term {term}");
                self.nodes[r].leader_term = Some(term);
                self.hist
                    .check_leader_completeness(id, term, self.nodes[r].storage.log(), 1)?;
            }
        } else {
            self.nodes[r].leader_term = None;
        }
        Ok(())
    }
}
