//! The connection registry's choices: who goes at the cap and at a peer's
//! limit, and how the limits resolve.

use super::*;

fn http(max_connections: usize) -> HttpConfig {
    HttpConfig {
        max_connections,
        ..HttpConfig::default()
    }
}

#[test]
fn the_cap_stays_below_the_file_limit() {
    assert_eq!(Limits::resolve(&http(0), Some(1024)).max_connections, 512);
    assert_eq!(
        Limits::resolve(&http(0), Some(1 << 20)).max_connections,
        10_000
    );
    assert_eq!(Limits::resolve(&http(0), None).max_connections, 10_000);
    assert_eq!(Limits::resolve(&http(64), Some(1024)).max_connections, 64);
    assert_eq!(
        Limits::resolve(&http(5000), Some(1024)).max_connections,
        768
    );
}

fn local(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, n])
}

#[test]
fn the_per_peer_limit_is_a_quarter_of_the_cap_unless_set() {
    assert_eq!(Limits::resolve(&http(40), None).max_per_peer, 10);
    assert_eq!(Limits::resolve(&http(2), None).max_per_peer, 1);
    let set = |n| HttpConfig {
        max_connections: 40,
        max_connections_per_peer: n,
        ..HttpConfig::default()
    };
    assert_eq!(Limits::resolve(&set(7), None).max_per_peer, 7);
    assert_eq!(Limits::resolve(&set(500), None).max_per_peer, 40);
}

#[test]
fn at_the_cap_the_longest_idle_connection_goes() {
    let r = Arc::new(Registry::new(2, 2));
    let (a, conn_a, _) = r.admit(local(1), true).unwrap();
    let (_b, conn_b, _) = r.admit(local(1), true).unwrap();
    // `a` is handling a request; `b` is idle: `b` goes, though `a` is
    // older.
    let _busy = Busy::new(Arc::clone(&conn_a), Arc::clone(&r), false);
    let (_c, _, evicted) = r.admit(local(2), true).unwrap();
    assert!(Arc::ptr_eq(&evicted.unwrap(), &conn_b));
    let conns = r.conns();
    assert!(conns.contains_key(&a));
    assert_eq!(conns.len(), 2);
    drop(conns);
    assert_eq!(Arc::strong_count(&conn_b), 1, "b was removed");
    assert!(!r.conns().values().any(|c| Arc::ptr_eq(c, &conn_b)));
}

#[test]
fn when_every_connection_is_handling_a_read_request_the_new_one_is_refused() {
    let r = Arc::new(Registry::new(1, 1));
    let (_a, conn, _) = r.admit(local(1), true).unwrap();
    let _busy = Busy::new(conn, Arc::clone(&r), false);
    assert!(r.admit(local(2), true).is_none());
}

/// A registry whose clock started a minute ago, so that tests can say a
/// body has been arriving for a while without waiting for it.
fn aged_registry(cap: usize, per_peer: usize) -> Arc<Registry> {
    let mut r = Registry::new(cap, per_peer);
    r.epoch = crate::clock::Stopwatch::started_ago(Duration::from_secs(60));
    Arc::new(r)
}

/// Says the request on `conn` has waited `ms` for its body.
fn reading_for(conn: &Conn, r: &Registry, ms: u64) {
    conn.reading_since
        .store(r.now() - ms + 1, Ordering::Release);
}

#[test]
fn a_request_still_waiting_for_its_body_can_be_closed_at_the_cap() {
    let r = aged_registry(2, 2);
    let (_a, conn_a, _) = r.admit(local(1), true).unwrap();
    let (_b, conn_b, _) = r.admit(local(2), true).unwrap();
    let _handling = Busy::new(Arc::clone(&conn_a), Arc::clone(&r), false);
    let _reading = Busy::new(Arc::clone(&conn_b), Arc::clone(&r), true);
    // A body that brought its first KiB at once is safe; one that did not
    // is not, however young.
    conn_b.body_bytes.store(2048, Ordering::Release);
    assert!(r.admit(local(3), true).is_none());
    conn_b.body_bytes.store(1, Ordering::Release);
    let (_c, conn_c, evicted) = r.admit(local(3), true).unwrap();
    assert!(Arc::ptr_eq(&evicted.unwrap(), &conn_b));
    // Once its body has arrived, a request is the server's to finish.
    let _read = Busy::new(Arc::clone(&conn_c), Arc::clone(&r), true);
    conn_c.reading_since.store(0, Ordering::Release);
    assert!(r.admit(local(4), true).is_none());
}

#[test]
fn the_reader_waiting_longest_goes_first() {
    let r = aged_registry(2, 2);
    let (_a, conn_a, _) = r.admit(local(1), true).unwrap();
    let (_b, conn_b, _) = r.admit(local(2), true).unwrap();
    let _b_reading = Busy::new(Arc::clone(&conn_b), Arc::clone(&r), true);
    let _a_reading = Busy::new(Arc::clone(&conn_a), Arc::clone(&r), true);
    reading_for(&conn_b, &r, 3000);
    reading_for(&conn_a, &r, 2000);
    let (_c, _, evicted) = r.admit(local(3), true).unwrap();
    assert!(Arc::ptr_eq(&evicted.unwrap(), &conn_b));
}

/// An upload arriving at a real client's pace is not cut off to make room,
/// however long it has been going: only bodies slower than the minimum
/// pace are.
#[test]
fn an_upload_at_a_real_pace_is_never_closed_to_make_room() {
    let r = aged_registry(2, 2);
    let (_a, conn_a, _) = r.admit(local(1), true).unwrap();
    let (_b, conn_b, _) = r.admit(local(2), true).unwrap();
    let _a_reading = Busy::new(Arc::clone(&conn_a), Arc::clone(&r), true);
    let _b_reading = Busy::new(Arc::clone(&conn_b), Arc::clone(&r), true);
    // Ten seconds in, a has 40 KiB (4 KiB/s), b has 5 KiB (0.5 KiB/s).
    reading_for(&conn_a, &r, 10_000);
    reading_for(&conn_b, &r, 10_000);
    conn_a.body_bytes.store(40 * 1024, Ordering::Release);
    conn_b.body_bytes.store(5 * 1024, Ordering::Release);
    let (_c, _, evicted) = r.admit(local(3), true).unwrap();
    assert!(Arc::ptr_eq(&evicted.unwrap(), &conn_b));
    // Now only the fast upload and the new connection's request remain.
    assert!(r.admit(local(4), true).is_some_and(|(_, _, e)| e.is_some()));
    assert!(r.conns().values().any(|c| Arc::ptr_eq(c, &conn_a)));
}

#[test]
fn at_its_limit_a_peer_loses_its_own_connection_not_anothers() {
    let r = Arc::new(Registry::new(10, 2));
    let (_other, conn_other, _) = r.admit(local(9), true).unwrap();
    let (_a, conn_a, _) = r.admit(local(1), true).unwrap();
    let (_b, _, _) = r.admit(local(1), true).unwrap();
    let (_c, _, evicted) = r.admit(local(1), true).unwrap();
    // `other` is the oldest idle connection, but not the peer's.
    assert!(Arc::ptr_eq(&evicted.unwrap(), &conn_a));
    assert!(r.conns().values().any(|c| Arc::ptr_eq(c, &conn_other)));
    // An exempt peer (a trusted proxy) is not counted.
    for _ in 0..5 {
        let (_, _, evicted) = r.admit(local(7), false).unwrap();
        assert!(evicted.is_none());
    }
    // A connection that ends frees its place in the peer's count.
    let (b, _, _) = r.admit(local(2), true).unwrap();
    let (_, _, _) = r.admit(local(2), true).unwrap();
    r.remove(b);
    let (_, _, evicted) = r.admit(local(2), true).unwrap();
    assert!(evicted.is_none());
}
