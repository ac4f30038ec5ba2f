//! openraft's own storage test suite against the write-ahead log store and the redb state machine.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};

use crate::raft_types::TypeConfig;
use crate::server::{LogStore, StateMachine, Wal, store};

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RedbBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = store::open(&dir.path().join("meta.redb")).expect("database opens");
        // Group 3 on purpose: nothing may assume a group id.
        let wal = Wal::open(&dir.path().join("wal"), &db).expect("log opens");
        let log = LogStore::new(wal, 3);
        let sm = StateMachine::new(db, 3, dir.path().join("snapshots"));
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::test_all(RedbBuilder)
        .await
        .expect("openraft storage suite");
}
