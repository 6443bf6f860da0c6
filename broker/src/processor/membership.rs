//! ADD_GROUP_NODE (9002), REMOVE_GROUP_NODE (9003) and GET_GROUP_MEMBERS (9004),
//! rocketraft's own codes: change this group's Raft membership, or show it (`rocketraft
//! admin add-node / remove-node / members`). Changes are taken by the leader only (a
//! follower answers with the leader's address); what `dledger::membership` refuses is
//! answered SYSTEM_ERROR with its reason, nothing changed.

use dledger::{DLedgerError, Members};
use remoting::{Connection, RemotingCommand, ResponseCode};
use serde_json::json;

use super::{fail, required_ext, ProcessError, ProcessResult};
use crate::broker::Broker;

/// ADD_GROUP_NODE: extFields `brokerName`, `nodeId` (`n3`), `peerAddr`.
pub async fn add(broker: &Broker, _conn: &Connection, request: &RemotingCommand) -> ProcessResult {
    check_group(broker, request)?;
    let id = node_id(request)?;
    let addr = required_ext(request, "peerAddr")?;
    if addr.parse::<std::net::SocketAddr>().is_err() {
        return Err(fail(
            ResponseCode::SYSTEM_ERROR,
            format!("peerAddr `{addr}` is not an ip:port address"),
        ));
    }
    answer(broker, broker.add_node(id, addr).await)
}

/// REMOVE_GROUP_NODE: extFields `brokerName`, `nodeId`.
pub async fn remove(
    broker: &Broker,
    _conn: &Connection,
    request: &RemotingCommand,
) -> ProcessResult {
    check_group(broker, request)?;
    let id = node_id(request)?;
    let result = broker.remove_node(id).await;
    if id == broker.role().node_id && matches!(result, Err(DLedgerError::MembershipRefused { .. }))
    {
        let remark = result.err().map(|e| e.to_string()).unwrap_or_default();
        return Ok(RemotingCommand::error(ResponseCode::SYSTEM_ERROR, remark)
            .with_ext("targetLeads", "true"));
    }
    answer(broker, result)
}

/// GET_GROUP_MEMBERS: extFields `brokerName`; any member answers.
pub fn members(broker: &Broker, _conn: &Connection, request: &RemotingCommand) -> ProcessResult {
    check_group(broker, request)?;
    Ok(RemotingCommand::success().with_body(body(&broker.members())))
}

fn answer(broker: &Broker, result: Result<Members, DLedgerError>) -> ProcessResult {
    match result {
        Ok(members) => Ok(RemotingCommand::success().with_body(body(&members))),
        Err(DLedgerError::NotLeader { .. }) => Ok(broker.not_leader_response()),
        Err(e @ DLedgerError::MembershipIncomplete { catching_up, .. }) => {
            let mut response = RemotingCommand::error(ResponseCode::SYSTEM_ERROR, e.to_string());
            if catching_up {
                response = response.with_ext("catchingUp", "true");
            }
            Ok(response)
        }
        Err(e) => Err(fail(ResponseCode::SYSTEM_ERROR, e.to_string())),
    }
}

/// Refuses a request whose `brokerName` is not this node's group.
pub(super) fn check_group(broker: &Broker, request: &RemotingCommand) -> Result<(), ProcessError> {
    let broker_name = required_ext(request, "brokerName")?;
    if broker_name != broker.config().broker_name {
        return Err(fail(
            ResponseCode::SYSTEM_ERROR,
            format!(
                "this node belongs to broker group {}, not {broker_name}",
                broker.config().broker_name
            ),
        ));
    }
    Ok(())
}

fn node_id(request: &RemotingCommand) -> Result<u64, ProcessError> {
    dledger::parse_node_name(required_ext(request, "nodeId")?)
        .map_err(|e| fail(ResponseCode::SYSTEM_ERROR, e.to_string()))
}

/// The membership as JSON, members named as in `dLegerPeers` (`n0`).
fn body(m: &Members) -> Vec<u8> {
    let named = |ids: &std::collections::BTreeMap<u64, String>| {
        ids.iter()
            .map(|(id, addr)| (format!("n{id}"), json!(addr)))
            .collect::<serde_json::Map<_, _>>()
    };
    let matched: serde_json::Map<_, _> = m
        .matched
        .iter()
        .map(|(id, index)| (format!("n{id}"), json!(index)))
        .collect();
    let value = json!({
        "nodeId": format!("n{}", m.node_id),
        "leaderId": m.leader_id.map(|id| format!("n{id}")),
        "term": m.term,
        "voters": named(&m.voters),
        "learners": named(&m.learners),
        "joint": m.joint,
        "lastLogIndex": m.last_log_index,
        "matched": matched,
    });
    serde_json::to_vec(&value).expect("JSON of plain values")
}
