use std::time::Duration;

use serde_json::json;

use super::*;
use crate::auth::{Actor, Principal, Role};
use crate::config::{Config, Secret};

/// A server's groups with every inspection permit taken, so that nothing
/// may preview or explain until `held` is dropped.
async fn with_every_permit_held() -> (tempfile::TempDir, Groups, tokio::sync::OwnedSemaphorePermit)
{
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        bootstrap_admin_key: Some(Secret::new("unit-admin-key-0123456789abcdef")),
        ..Config::default()
    };
    let store =
        crate::server::open_store(&config.data_dir, &config.storage.open_options()).unwrap();
    let built = crate::server::build(&config, store, Arc::new(crate::clock::SystemClock)).unwrap();
    let groups = built.state.groups.clone();
    let permits = groups.inner.previews.available_permits();
    assert!(permits >= 1);
    let held = Arc::clone(&groups.inner.previews)
        .acquire_many_owned(u32::try_from(permits).unwrap())
        .await
        .unwrap();
    (dir, groups, held)
}

/// A preview waits for a permit, and runs once one is free: however
/// many a reader asks for at once, only a few evaluate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_wait_for_a_permit() {
    let (_dir, groups, held) = with_every_permit_held().await;
    let input: PreviewInput = serde_json::from_value(
        json!({"subject": "user", "rule": {"expression": "user.department == 'Sales'"}}),
    )
    .unwrap();
    let waiting = tokio::spawn(async move {
        let read = Principal::new(Actor::system("test"), Role::ReadOnly)
            .read()
            .unwrap();
        groups.preview(&read, input).await
    });
    // Nothing can finish it while every permit is taken; without the
    // bound it would be done in a few milliseconds.
    #[allow(clippy::disallowed_methods)] // Showing that nothing happens takes real time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a preview ran without a permit");
    drop(held);
    let preview = waiting.await.unwrap().unwrap();
    assert_eq!(preview.members.count, 0);
}

/// Explanations take the same permits as previews: a reader cannot get
/// around the bound by asking for explanations instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explanations_wait_for_a_permit_too() {
    let (_dir, groups, held) = with_every_permit_held().await;
    let waiting = tokio::spawn(async move {
        let read = Principal::new(Actor::system("test"), Role::ReadOnly)
            .read()
            .unwrap();
        groups.explain(&read, Uuid::nil(), Uuid::nil()).await
    });
    #[allow(clippy::disallowed_methods)] // Showing that nothing happens takes real time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "an explanation ran without a permit"
    );
    drop(held);
    // No such group: what matters is that it ran once a permit was free.
    assert!(matches!(
        waiting.await.unwrap(),
        Err(DomainError::NotFound { .. })
    ));
}
