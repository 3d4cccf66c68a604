//! [`Router::check_invariants`]: the router's state checked against itself. Owns the
//! list of invariants; used by tests and fuzzing, cheap enough for debug asserts
//! but not meant for every call in production.

use super::{
    line_group, open_offer, Agent, Conversation, Member, OpenOffer, Router, State, Transfer,
};
use pitboss_protocol::{AgentId, AgentStatus, ConversationId};

impl Router {
    /// Checks every invariant; Err describes the first violated. Used by tests and
    /// fuzzing. The invariants:
    ///
    /// * a queued conversation is in the line at its key; a department-transfer
    ///   waiter too; nothing else is in the line; the per-line index holds exactly
    ///   the same places, each in its department and language's line, marked
    ///   queued and offered as the conversation is;
    /// * an owned conversation's owner is a known agent who lists it as owned;
    /// * every open offer (at most one per conversation, by construction) is to a
    ///   known, Online agent who lists it, fits their profile (department and
    ///   language, or language only for a named transfer), is not to the owner, and
    ///   that agent has no cooldown entry for it;
    /// * an agent's owned and offered sets match the conversations exactly (so load
    ///   == owned + open offers), Away/Offline agents hold no offers, and nobody
    ///   holds more offers than their capacity;
    /// * dispatch is complete: no conversation waiting without an offer has an
    ///   eligible agent (Online, serves it, below capacity, not its owner, no
    ///   cooldown entry).
    pub fn check_invariants(&self) -> Result<(), String> {
        for (key, id) in &self.waiting {
            let c = self
                .conversations
                .get(id)
                .ok_or_else(|| format!("line entry {key:?} for unknown conversation {id}"))?;
            let expected = match &c.state {
                State::Queued { key, .. } => Some(key),
                State::Owned {
                    transfer: Some(Transfer::ToDepartment { key, .. }),
                    ..
                } => Some(key),
                State::Owned { .. } => None,
            };
            if expected != Some(key) {
                return Err(format!(
                    "line entry {key:?} for {id} does not match its state"
                ));
            }
            if key.seq >= self.next_seq {
                return Err(format!("line entry {key:?} has a sequence not yet issued"));
            }
            let (department, language) =
                line_group(c).ok_or_else(|| format!("{id} is in the line without a line"))?;
            let member = self
                .lines
                .line(department, language)
                .and_then(|l| l.members.get(key));
            let expected = Member {
                id: *id,
                queued: matches!(c.state, State::Queued { .. }),
                offered: open_offer(&c.state).is_some(),
            };
            if member != Some(&expected) {
                return Err(format!(
                    "{id} is {member:?} in the {department}/{language} line, not {expected:?}"
                ));
            }
        }
        for (department, language, line) in self.lines.iter() {
            let unoffered = line.members.values().filter(|m| !m.offered).count();
            if line.unoffered != unoffered || line.members.is_empty() {
                return Err(format!(
                    "the {department}/{language} line counts {} without an offer, holds {unoffered} of {}",
                    line.unoffered,
                    line.members.len()
                ));
            }
        }
        if self.lines.len() != self.waiting.len() {
            return Err(format!(
                "the lines hold {} places, the line {}",
                self.lines.len(),
                self.waiting.len()
            ));
        }

        for (id, c) in &self.conversations {
            self.check_conversation(*id, c)?;
        }

        for (agent_id, a) in &self.agents {
            check_agent(agent_id, a)?;
            for id in &a.owned {
                match self.conversations.get(id).map(|c| &c.state) {
                    Some(State::Owned { agent, .. }) if agent == agent_id => {}
                    _ => {
                        return Err(format!(
                            "{agent_id} lists {id} as owned but does not own it"
                        ))
                    }
                }
            }
            for id in &a.offers {
                let to = self
                    .conversations
                    .get(id)
                    .and_then(|c| open_offer(&c.state))
                    .map(|o| &o.agent);
                if to != Some(agent_id) {
                    return Err(format!(
                        "{agent_id} lists an offer of {id} that is not open to them"
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_conversation(&self, id: ConversationId, c: &Conversation) -> Result<(), String> {
        let in_line = |key| self.waiting.get(key) == Some(&id);
        match &c.state {
            State::Queued { key, offer, .. } => {
                if !in_line(key) {
                    return Err(format!("queued {id} is not in the line at its key"));
                }
                if let Some(offer) = offer {
                    self.check_offer(id, c, offer, None, Some(&c.request.department))?;
                }
            }
            State::Owned {
                agent, transfer, ..
            } => {
                let owner = self
                    .agents
                    .get(agent)
                    .ok_or_else(|| format!("{id} is owned by unknown agent {agent}"))?;
                if !owner.owned.contains(&id) {
                    return Err(format!("{id} is owned by {agent} who does not list it"));
                }
                match transfer {
                    None => {}
                    Some(Transfer::ToAgent { offer }) => {
                        self.check_offer(id, c, offer, Some(agent), None)?;
                    }
                    Some(Transfer::ToDepartment {
                        department,
                        key,
                        offer,
                        ..
                    }) => {
                        if !in_line(key) {
                            return Err(format!(
                                "{id} waits for {department} but is not in the line"
                            ));
                        }
                        if let Some(offer) = offer {
                            self.check_offer(id, c, offer, Some(agent), Some(department))?;
                        }
                    }
                }
            }
        }
        if let Some(need) = self.need(c) {
            let idle = self.agents.iter().find(|(agent_id, a)| {
                // A cooldown entry blocks here whatever its time: the check has no
                // clock, and dispatch drops an entry when it offers past it.
                Self::eligible(agent_id, a, c, &need, 0) && !c.cooldowns.contains_key(*agent_id)
            });
            if let Some((agent_id, _)) = idle {
                return Err(format!(
                    "{id} waits without an offer while {agent_id} could take it"
                ));
            }
        }
        Ok(())
    }

    /// `department` is None for a named-agent transfer (language only).
    fn check_offer(
        &self,
        id: ConversationId,
        c: &Conversation,
        offer: &OpenOffer,
        owner: Option<&AgentId>,
        department: Option<&String>,
    ) -> Result<(), String> {
        let to = &offer.agent;
        let a = self
            .agents
            .get(to)
            .ok_or_else(|| format!("{id} is offered to unknown agent {to}"))?;
        if !a.offers.contains(&id) {
            return Err(format!("{id} is offered to {to} who does not list it"));
        }
        if a.status != AgentStatus::Online {
            return Err(format!("{id} is offered to {to} who is {:?}", a.status));
        }
        let fits = match department {
            Some(d) => a.serves(d, &c.request.language),
            None => a.speaks(&c.request.language),
        };
        if !fits {
            return Err(format!("{id} is offered to {to} who does not serve it"));
        }
        if owner == Some(to) {
            return Err(format!("{id} is offered to its own owner {to}"));
        }
        if c.cooldowns.contains_key(to) {
            return Err(format!("{id} is offered to {to} during their cooldown"));
        }
        Ok(())
    }
}

fn check_agent(id: &AgentId, a: &Agent) -> Result<(), String> {
    if a.status != AgentStatus::Online && !a.offers.is_empty() {
        return Err(format!("{id} is {:?} but holds offers", a.status));
    }
    if a.offers.len() > a.profile.capacity as usize {
        return Err(format!("{id} holds more offers than their capacity"));
    }
    Ok(())
}
