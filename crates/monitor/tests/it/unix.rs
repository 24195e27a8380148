//! The Unix socket: peers are who the kernel says they are (SO_PEERCRED).

use forkyard_monitor::{Access, Monitor, Role};

use crate::support::{Baseline, OPERATOR, exchange, pool, supervisor};

async fn ask(path: &std::path::Path, method: &str, uri: &str, token: Option<&str>) -> u16 {
    let stream = tokio::net::UnixStream::connect(path).await.unwrap();
    exchange(stream, "localhost", method, uri, token, Vec::new())
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_uids_map_to_roles() {
    let base = Baseline::take().await;
    let me = rustix::process::getuid().as_raw();
    let pool = pool(1).await;
    let sup = supervisor().await;
    let dir = tempfile::tempdir().unwrap();
    let restart = "/api/supervisors/root/children/web/restart";
    // (our uid's role, or none) -> (GET snapshot, POST restart, POST restart with the operator token)
    let table = [
        (Some(Role::Viewer), (200, 403, 200)),
        (Some(Role::Operator), (200, 200, 200)),
        (Some(Role::Auditor), (200, 403, 200)),
        (None, (401, 401, 200)),
    ];
    for (i, (role, want)) in table.into_iter().enumerate() {
        let mut access = Access::new().token("otto", Role::Operator, OPERATOR);
        if let Some(role) = role {
            access = access.uid(me, role);
        }
        // Another uid with a role changes nothing for us.
        access = access.uid(me.wrapping_add(1), Role::Operator);
        let monitor = Monitor::builder().access(access).build().unwrap();
        monitor.watch_pool("images", &pool).unwrap();
        monitor.watch_supervisor(&sup).unwrap();
        let path = dir.path().join(format!("monitor-{i}.sock"));
        let server = monitor.serve_unix(&path).await.unwrap();
        let got = (
            ask(&path, "GET", "/api/snapshot", None).await,
            ask(&path, "POST", restart, None).await,
            ask(&path, "POST", restart, Some(OPERATOR)).await,
        );
        assert_eq!(got, want, "{role:?}");
        server.shutdown().await;
        assert!(!path.exists(), "the socket file is removed");
    }
    pool.shutdown(forkyard_pool::ShutdownMode::Cancel {
        grace: std::time::Duration::from_secs(1),
    })
    .await;
    let _ = sup.shutdown().await;
    base.assert_clean().await;
}
