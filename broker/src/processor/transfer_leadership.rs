//! TRANSFER_LEADERSHIP (9001, rocketraft's own code): hand this group's Raft leadership to
//! another member (`rocketraft admin transfer-leader`). Only the leader takes it (a follower
//! answers with the leader's address); appends are held only for the hand-over, and a
//! transfer that cannot complete is reported as failed with leadership where it is.

use remoting::{Connection, RemotingCommand, ResponseCode};

use super::{fail, required_ext, ProcessResult};
use crate::broker::Broker;

/// TRANSFER_LEADERSHIP (9001): extFields `brokerName` (this group) and `targetId` (`n1`).
/// Success carries `leaderId`, `term`, `heldMs` (appends held) and `elapsedMs`.
pub async fn handle(
    broker: &Broker,
    _conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    super::membership::check_group(broker, request)?;
    let target_name = required_ext(request, "targetId")?;
    let target = dledger::parse_node_name(target_name)
        .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e.to_string()))?;
    match broker.transfer_leadership(target).await {
        Ok(done) => Ok(RemotingCommand::success()
            .with_ext("leaderId", format!("n{}", done.to))
            .with_ext("term", done.term.to_string())
            .with_ext("heldMs", done.held_ms.to_string())
            .with_ext("elapsedMs", done.elapsed_ms.to_string())),
        Err(dledger::DLedgerError::NotLeader { .. }) => Ok(broker.not_leader_response()),
        Err(e) => Err(fail(ResponseCode::SYSTEM_ERROR, e.to_string())),
    }
}
