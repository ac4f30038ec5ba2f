//! Finishing cross-group transactions whose client went away.

use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;

use super::{MetaNode, state_machine};
use crate::request::ReadRequest;
use crate::types::*;

/// How often a leader looks for transactions whose client went away.
const TX_RECOVERY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// A prepared transaction this old is presumed abandoned by its client. A
/// live client that is slower than this only sees its operation retried.
const TX_STALE_SECS: i64 = 5;

/// Finishes, from the leader of each of this node's partition groups, the
/// transactions whose client stopped between prepare and finish.
pub(super) async fn recover_transactions(
    node: Arc<MetaNode>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let client: tokio::sync::Mutex<Option<Arc<crate::MetaClient>>> = Default::default();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(TX_RECOVERY_INTERVAL) => {}
        }
        let sweep = async {
            for g in node.groups() {
                if g == CLUSTER_GROUP {
                    continue;
                }
                let Some(raft) = node.raft(g) else { continue };
                if raft.metrics().borrow_watched().current_leader != Some(node.id) {
                    continue;
                }
                let db = node.db.clone();
                let read = tokio::task::spawn_blocking(move || {
                    state_machine::read(&db, g, ReadRequest::ListIntents)
                })
                .await;
                let Ok(Ok(Ok(crate::request::MetaResponse::Intents(intents)))) = read else {
                    continue;
                };
                let now = Timestamp::now().sec;
                let stale: Vec<_> = intents
                    .into_iter()
                    // Far in the future counts too: the prepare time is the
                    // client's clock, and a wrong one must not keep an
                    // intent (and its locks) for years.
                    .filter(|i| (now - i.prepared.sec).abs() >= TX_STALE_SECS)
                    .collect();
                if stale.is_empty() {
                    continue;
                }
                let mut client = client.lock().await;
                if client.is_none() {
                    let addrs = std::slice::from_ref(&node.addr);
                    match crate::MetaClient::connect_with(
                        addrs,
                        crate::rpc::Credentials::tls(node.tls.clone()),
                    )
                    .await
                    {
                        Ok(c) => *client = Some(c),
                        Err(e) => {
                            tracing::warn!(error = %e, "transaction recovery cannot reach the cluster");
                            continue;
                        }
                    }
                }
                let c = client.as_ref().expect("just set");
                for intent in stale {
                    match c.resolve_transaction(&intent).await {
                        Ok(committed) => {
                            tracing::info!(
                                tx = intent.tx,
                                group = g,
                                committed,
                                "finished an abandoned transaction"
                            )
                        }
                        Err(e) => {
                            tracing::warn!(tx = intent.tx, error = %e, "transaction recovery failed")
                        }
                    }
                }
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = sweep => {}
        }
    }
}
