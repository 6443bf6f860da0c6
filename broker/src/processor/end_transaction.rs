//! END_TRANSACTION (37), usually oneway: a producer commits or rolls back a half message
//! (see [`crate::transaction`]). Leader only.
//!
//! - Commit: the half is read at `commitLogOffset`, rebuilt for its real topic and queue
//!   and appended with the origin property; applying it queues it only while the half is
//!   pending, so a repeated commit is stored but delivered once.
//! - Rollback: [`BrokerCommand::RollbackHalf`] through Raft removes the half's key.
//! - Not type (the producer does not know yet): nothing; the half waits for a check-back.
//!
//! The request must name a pending half of the same producer group and half-queue offset
//! (RocketMQ's `checkPrepareMessage`); otherwise the answer is SYSTEM_ERROR with a remark
//! (for a oneway request, the server logs it as a warning).

use remoting::header::EndTransactionRequestHeader;
use remoting::message::{property, sys_flag, MessageRecord};
use remoting::{Connection, RemotingCommand, ResponseCode};
use tracing::{debug, info, warn};

use super::send::{append_error, now_ms};
use super::{fail, ProcessError, ProcessResult};
use crate::broker::Broker;
use crate::command::BrokerCommand;
use crate::store::Applied;
use crate::transaction::{self, HalfState};

pub async fn handle(
    broker: &Broker,
    conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    let h: EndTransactionRequestHeader = request.header()?;
    let from_check = h.from_transaction_check.unwrap_or(false);
    let kind = match h.commit_or_rollback {
        sys_flag::TRANSACTION_COMMIT => "commit",
        sys_flag::TRANSACTION_ROLLBACK => "rollback",
        0 => {
            warn!(peer = %conn.peer(), producer_group = %h.producer_group, msg_id = %h.msg_id,
                from_check, remark = request.remark.as_deref().unwrap_or(""),
                "the producer ended a transaction in unknown state; it will be checked back");
            return Ok(RemotingCommand::success());
        }
        other => {
            return Err(fail(
                ResponseCode::SYSTEM_ERROR,
                format!(
                    "commitOrRollback {other} is none of 0 (unknown), 8 (commit), 12 (rollback)"
                ),
            ))
        }
    };
    debug!(peer = %conn.peer(), producer_group = %h.producer_group, offset = h.commit_log_offset, kind, from_check, "end transaction");
    let offset = u64::try_from(h.commit_log_offset).map_err(|_| {
        fail(
            ResponseCode::SYSTEM_ERROR,
            format!("commitLogOffset {} is negative", h.commit_log_offset),
        )
    })?;
    let state = pending(broker, &h, offset)?;
    if h.commit_or_rollback == sys_flag::TRANSACTION_ROLLBACK {
        // For the metrics only: a half that cannot be read is still rolled back.
        let topic = transaction::read_half(broker, offset, &state)
            .ok()
            .and_then(|bytes| {
                let (half, _) = MessageRecord::decode(&bytes).ok()?;
                half.property(property::REAL_TOPIC).map(str::to_string)
            })
            .unwrap_or_default();
        broker
            .propose(&BrokerCommand::RollbackHalf {
                commit_log_offset: offset,
            })
            .await
            .map_err(|e| append_error(broker, e))?;
        broker.metrics().events.rolled_back(&topic);
        info!(producer_group = %h.producer_group, offset, msg_id = %h.msg_id, from_check, "transaction rolled back");
        return Ok(RemotingCommand::success());
    }
    let bytes = transaction::read_half(broker, offset, &state).map_err(|e| {
        fail(
            ResponseCode::SYSTEM_ERROR,
            format!("Find prepared transaction message failed: {e}"),
        )
    })?;
    let (half, _) = MessageRecord::decode(&bytes)
        .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e.to_string()))?;
    let now = now_ms();
    let record = transaction::committed(&half, offset, broker, now)
        .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e))?;
    let topic = half
        .property(property::REAL_TOPIC)
        .unwrap_or("")
        .to_string();
    let appended = broker
        .append(vec![record])
        .await
        .map_err(|e| append_error(broker, e))?;
    match appended.first().map(|a| a.applied) {
        Some(Applied::Queued { .. }) => {
            (broker.metrics().events).committed(&topic, state.born_timestamp, now);
            debug!(producer_group = %h.producer_group, offset, msg_id = %h.msg_id, "transaction committed");
            Ok(RemotingCommand::success())
        }
        _ => Err(fail(
            ResponseCode::SYSTEM_ERROR,
            format!(
                "the half message at commit log offset {offset} was resolved (committed, rolled \
                 back or discarded) before this commit applied; it was not delivered again"
            ),
        )),
    }
}

/// The half `h` names, if it is pending and belongs to `h`'s producer group at `h`'s
/// half-queue offset (RocketMQ's `checkPrepareMessage` remarks).
fn pending(
    broker: &Broker,
    h: &EndTransactionRequestHeader,
    offset: u64,
) -> Result<HalfState, ProcessError> {
    let state = transaction::pending_half(broker, offset)
        .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e))?
        .ok_or_else(|| {
            fail(
                ResponseCode::SYSTEM_ERROR,
                format!(
                    "Find prepared transaction message failed: no pending half message at commit \
                     log offset {offset} (never prepared, or already committed, rolled back or \
                     discarded)"
                ),
            )
        })?;
    if state.producer_group != h.producer_group {
        return Err(fail(
            ResponseCode::SYSTEM_ERROR,
            format!(
                "The producer group wrong: the half message at {offset} belongs to {}, not {}",
                state.producer_group, h.producer_group
            ),
        ));
    }
    if state.queue_offset as i64 != h.tran_state_table_offset {
        return Err(fail(
            ResponseCode::SYSTEM_ERROR,
            format!(
                "The transaction state table offset wrong: the half message at {offset} is at {}, not {}",
                state.queue_offset, h.tran_state_table_offset
            ),
        ));
    }
    Ok(state)
}
