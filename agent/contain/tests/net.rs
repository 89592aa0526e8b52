//! block_ip and isolate_host against real nftables, only inside network namespaces these tests
//! make (PRODUCT.md, "Safety when testing containment").
//!
//! Each test builds a lab of three namespaces: `victim` (where picket's table goes), `attacker`
//! and `bystander`, each linked to the victim by its own veth pair:
//!
//! ```text
//!   attacker  10.252.N.2/30, fd00:252:N::2/64  ──  victim 10.252.N.1, fd00:252:N::1
//!   bystander 10.252.N.6/30, fd00:252:N:1::2/64 ── victim 10.252.N.5, fd00:252:N:1::1
//! ```
//!
//! Reachability is a TCP connect from a thread inside the attacker's or bystander's namespace to a
//! listener the test opened inside the victim's. The namespaces are deleted when the lab drops,
//! even when the test fails, and every test ends by checking that the host's own ruleset is what
//! it was. Without root or without nft the tests print a loud SKIPPED line and pass.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use picket_contain::net::{Blocked, Isolation, MgmtAccess, NetContainment, NetError, NetOptions, Netns};

const PORT: u16 = 7000;

/// Whether real nftables tests can run here; if not, says so loudly.
fn can_run(test: &str) -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let nft = Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success());
    let ip = Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success());
    if !(root && nft && ip) {
        eprintln!(
            "\n!!!!! SKIPPED (needs root + nftables + iproute2): {test} \
             (root={root}, nft={nft}, ip={ip})\n"
        );
    }
    root && nft && ip
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("spawn");
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host's own ruleset (read only).
fn host_ruleset() -> String {
    sh(&["nft", "list", "ruleset"])
}

struct Lab {
    n: u8,
    names: Vec<String>,
    victim: Netns,
    attacker: Netns,
    bystander: Netns,
    host_before: String,
    _listener: TcpListener,
}

impl Lab {
    /// Lab number `n` (its addresses are 10.252.N.x and fd00:252:N::x).
    fn new(tag: &str, n: u8) -> Lab {
        let host_before = host_ruleset();
        let pid = std::process::id();
        let [v, a, b] = ["v", "a", "b"].map(|role| format!("picket-t-{tag}-{pid}-{role}"));
        // From here on Drop deletes whatever was made, even if a later step fails.
        let mut names = Vec::new();
        for name in [&v, &a, &b] {
            sh(&["ip", "netns", "add", name]);
            names.push(name.clone());
        }
        let guard = Cleanup(names.clone());
        let links = [(&a, "va", "a0", 0u8, 0u8), (&b, "vb", "b0", 4, 1)];
        for (peer, vif, pif, base, sub) in links {
            sh(&["ip", "link", "add", vif, "netns", &v, "type", "veth", "peer", "name", pif, "netns", peer]);
            let (v4, p4) = (format!("10.252.{n}.{}/30", base + 1), format!("10.252.{n}.{}/30", base + 2));
            let (v6, p6) = (format!("fd00:252:{n}:{sub}::1/64"), format!("fd00:252:{n}:{sub}::2/64"));
            sh(&["ip", "-n", &v, "addr", "add", &v4, "dev", vif]);
            sh(&["ip", "-n", peer, "addr", "add", &p4, "dev", pif]);
            sh(&["ip", "-n", &v, "addr", "add", &v6, "dev", vif, "nodad"]);
            sh(&["ip", "-n", peer, "addr", "add", &p6, "dev", pif, "nodad"]);
            sh(&["ip", "-n", &v, "link", "set", vif, "up"]);
            sh(&["ip", "-n", peer, "link", "set", pif, "up"]);
        }
        for name in [&v, &a, &b] {
            sh(&["ip", "-n", name, "link", "set", "lo", "up"]);
        }
        let victim = Netns::open(&v).unwrap();
        // [::] with v6only off (a fresh namespace's default) takes IPv4 too.
        let listener = victim.run(|| TcpListener::bind(("::", PORT))).unwrap().unwrap();
        std::mem::forget(guard);
        Lab {
            n,
            names,
            victim,
            attacker: Netns::open(&a).unwrap(),
            bystander: Netns::open(&b).unwrap(),
            host_before,
            _listener: listener,
        }
    }

    fn opts(&self) -> NetOptions {
        NetOptions { netns: Some(self.victim.name().to_string()), ..NetOptions::default() }
    }

    fn ip(&self, s: &str) -> IpAddr {
        s.replace('N', &self.n.to_string()).parse().unwrap()
    }
    fn attacker4(&self) -> IpAddr {
        self.ip("10.252.N.2")
    }
    fn attacker6(&self) -> IpAddr {
        self.ip("fd00:252:N::2")
    }
    fn bystander4(&self) -> IpAddr {
        self.ip("10.252.N.6")
    }
    fn bystander6(&self) -> IpAddr {
        self.ip("fd00:252:N:1::2")
    }
    /// The victim's address on the attacker's link, or the bystander's.
    fn victim_addr(&self, from: &Netns, v6: bool) -> IpAddr {
        let by = std::ptr::eq(from, &self.bystander);
        match (v6, by) {
            (false, false) => self.ip("10.252.N.1"),
            (false, true) => self.ip("10.252.N.5"),
            (true, false) => self.ip("fd00:252:N::1"),
            (true, true) => self.ip("fd00:252:N:1::1"),
        }
    }

    /// Whether `from` completes a TCP handshake with the victim on `port`.
    fn connects(&self, from: &Netns, v6: bool, port: u16) -> bool {
        let to = SocketAddr::new(self.victim_addr(from, v6), port);
        connect(from, to)
    }

    /// `nft` inside the victim's namespace.
    fn nft(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", self.victim.name(), "nft"];
        full.extend_from_slice(args);
        sh(&full)
    }

    fn assert_host_untouched(&self) {
        assert_eq!(host_ruleset(), self.host_before, "the host's own ruleset changed");
    }
}

/// A dropped SYN makes the connect time out; 700 ms is long for a veth (~0.1 ms) and keeps
/// the blocked cases quick.
fn connect(from: &Netns, to: SocketAddr) -> bool {
    from.run(|| TcpStream::connect_timeout(&to, Duration::from_millis(700)).is_ok()).unwrap()
}

struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        drop(Cleanup(std::mem::take(&mut self.names)));
    }
}

fn find(list: &[Blocked], ip: IpAddr) -> Option<&Blocked> {
    list.iter().find(|b| b.ip == ip)
}

#[test]
fn block_drops_the_attacker_and_not_the_bystander_until_unblocked() {
    if !can_run("block_drops_the_attacker_and_not_the_bystander_until_unblocked") {
        return;
    }
    let lab = Lab::new("block", 1);
    let mut net = NetContainment::open(lab.opts()).unwrap();
    assert!(lab.connects(&lab.attacker, false, PORT));
    assert!(lab.connects(&lab.bystander, false, PORT));

    let started = Instant::now();
    net.block(&[(lab.attacker4(), None)]).unwrap();
    eprintln!("block of one address took {:?}", started.elapsed());

    assert!(!lab.connects(&lab.attacker, false, PORT), "blocked attacker still connects");
    assert!(lab.connects(&lab.bystander, false, PORT), "bystander lost access");
    let blocked = net.blocked().unwrap();
    assert_eq!(blocked, vec![Blocked { ip: lab.attacker4(), ttl: None, expires_in: None }]);
    // The kernel has it, in our table, and nft can see it.
    assert!(lab.nft(&["list", "set", "inet", "picket", "block4"]).contains(&lab.attacker4().to_string()));

    net.unblock(&[lab.attacker4()]).unwrap();
    assert!(lab.connects(&lab.attacker, false, PORT), "unblocked attacker still dropped");
    assert!(net.blocked().unwrap().is_empty());
    // Unblocking what isn't blocked is no error.
    net.unblock(&[lab.attacker4(), lab.bystander6()]).unwrap();
    lab.assert_host_untouched();
}

#[test]
fn a_blocked_address_with_a_ttl_is_released_by_the_kernel() {
    if !can_run("a_blocked_address_with_a_ttl_is_released_by_the_kernel") {
        return;
    }
    let lab = Lab::new("ttl", 2);
    let mut net = NetContainment::open(lab.opts()).unwrap();
    let started = Instant::now();
    net.block(&[(lab.attacker4(), Some(Duration::from_millis(1500)))]).unwrap();
    let b = net.blocked().unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].ttl, Some(Duration::from_millis(1500)));
    assert!(b[0].expires_in.is_some_and(|left| left <= Duration::from_millis(1500)), "{b:?}");
    assert!(!lab.connects(&lab.attacker, false, PORT));

    // Nobody unblocks: the element's timeout does.
    let deadline = started + Duration::from_secs(6);
    while !lab.connects(&lab.attacker, false, PORT) {
        assert!(Instant::now() < deadline, "still blocked after 6 s");
    }
    assert!(started.elapsed() >= Duration::from_millis(1400), "released early: {:?}", started.elapsed());
    assert!(net.blocked().unwrap().is_empty());

    // Right after expiry, before the kernel's garbage collection has removed the element, blocking
    // again and unblocking still work.
    for _ in 0..5 {
        net.block(&[(lab.bystander4(), Some(Duration::from_millis(1)))]).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        net.block(&[(lab.bystander4(), Some(Duration::from_secs(60)))]).unwrap();
        assert_eq!(net.blocked().unwrap()[0].ttl, Some(Duration::from_secs(60)));
        net.block(&[(lab.bystander6(), Some(Duration::from_millis(1)))]).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        net.unblock(&[lab.bystander4(), lab.bystander6()]).unwrap();
        assert!(net.blocked().unwrap().is_empty());
    }
    lab.assert_host_untouched();
}

#[test]
fn ipv6_addresses_are_blocked_and_unblocked() {
    if !can_run("ipv6_addresses_are_blocked_and_unblocked") {
        return;
    }
    let lab = Lab::new("v6", 3);
    let mut net = NetContainment::open(lab.opts()).unwrap();
    assert!(lab.connects(&lab.attacker, true, PORT));
    net.block(&[(lab.attacker6(), Some(Duration::from_secs(300)))]).unwrap();
    assert!(!lab.connects(&lab.attacker, true, PORT), "blocked IPv6 attacker still connects");
    assert!(lab.connects(&lab.attacker, false, PORT), "blocking its IPv6 address cut its IPv4");
    assert!(lab.connects(&lab.bystander, true, PORT));
    let b = net.blocked().unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!((b[0].ip, b[0].ttl), (lab.attacker6(), Some(Duration::from_secs(300))));
    net.unblock(&[lab.attacker6()]).unwrap();
    assert!(lab.connects(&lab.attacker, true, PORT));
    lab.assert_host_untouched();
}

#[test]
fn a_thousand_blocks_go_in_one_call_and_a_new_ttl_replaces_the_old() {
    if !can_run("a_thousand_blocks_go_in_one_call_and_a_new_ttl_replaces_the_old") {
        return;
    }
    let lab = Lab::new("batch", 4);
    let mut net = NetContainment::open(lab.opts()).unwrap();
    let mut ips: Vec<(IpAddr, Option<Duration>)> = (0..999u32)
        .map(|i| {
            let ip: IpAddr = if i % 3 == 0 {
                format!("fd00:253::{i:x}").parse().unwrap()
            } else {
                format!("10.253.{}.{}", i / 250, 1 + i % 250).parse().unwrap()
            };
            (ip, Some(Duration::from_secs(600)))
        })
        .collect();
    ips.push((lab.attacker4(), None));
    let started = Instant::now();
    net.block(&ips).unwrap();
    eprintln!("block of 1000 addresses in one call took {:?}", started.elapsed());
    let blocked = net.blocked().unwrap();
    assert_eq!(blocked.len(), 1000);
    assert!(!lab.connects(&lab.attacker, false, PORT));

    // Blocking again: the latest TTL wins, and a permanent block can be given a TTL and back.
    net.block(&[(ips[0].0, Some(Duration::from_secs(30))), (lab.attacker4(), Some(Duration::from_secs(60)))])
        .unwrap();
    let blocked = net.blocked().unwrap();
    assert_eq!(blocked.len(), 1000);
    assert_eq!(find(&blocked, ips[0].0).unwrap().ttl, Some(Duration::from_secs(30)));
    assert_eq!(find(&blocked, lab.attacker4()).unwrap().ttl, Some(Duration::from_secs(60)));
    net.block(&[(lab.attacker4(), None)]).unwrap();
    assert_eq!(find(&net.blocked().unwrap(), lab.attacker4()).unwrap().ttl, None);

    let all: Vec<IpAddr> = ips.iter().map(|(ip, _)| *ip).collect();
    net.unblock(&all).unwrap();
    assert!(net.blocked().unwrap().is_empty());
    assert!(lab.connects(&lab.attacker, false, PORT));
    lab.assert_host_untouched();
}

#[test]
fn isolation_keeps_loopback_allowed_peers_and_management_and_drops_the_rest() {
    if !can_run("isolation_keeps_loopback_allowed_peers_and_management_and_drops_the_rest") {
        return;
    }
    let lab = Lab::new("iso", 5);
    let ssh = lab.victim.run(|| TcpListener::bind(("::", 22))).unwrap().unwrap();
    let mut net = NetContainment::open(lab.opts()).unwrap();
    assert!(!net.is_isolated().unwrap());
    let iso = Isolation {
        allow: vec![
            format!("{}/32", lab.bystander4()).parse().unwrap(),
            format!("{}/128", lab.bystander6()).parse().unwrap(),
        ],
        mgmt: vec![MgmtAccess { from: format!("10.252.{}.0/30", lab.n).parse().unwrap(), tcp_port: 22 }],
        dhcp: false,
    };
    let started = Instant::now();
    net.isolate(&iso).unwrap();
    eprintln!("isolate took {:?}", started.elapsed());
    assert!(net.is_isolated().unwrap());

    assert!(lab.connects(&lab.bystander, false, PORT), "allowed IPv4 peer cut off");
    assert!(lab.connects(&lab.bystander, true, PORT), "allowed IPv6 peer cut off");
    assert!(!lab.connects(&lab.attacker, false, PORT), "isolated host still reachable over IPv4");
    assert!(!lab.connects(&lab.attacker, true, PORT), "isolated host still reachable over IPv6");
    assert!(lab.connects(&lab.attacker, false, 22), "management port from the management network cut off");
    for lo in ["127.0.0.1", "::1"] {
        let to = SocketAddr::new(lo.parse().unwrap(), PORT);
        assert!(connect(&lab.victim, to), "loopback {lo} cut off");
    }

    // Isolating again replaces the allow-list: now the attacker's network is the allowed one.
    let swapped = Isolation { allow: vec![format!("{}/32", lab.attacker4()).parse().unwrap()], ..iso };
    net.isolate(&swapped).unwrap();
    assert!(lab.connects(&lab.attacker, false, PORT));
    assert!(!lab.connects(&lab.bystander, false, PORT));

    net.release().unwrap();
    assert!(!net.is_isolated().unwrap());
    assert!(lab.connects(&lab.attacker, false, PORT));
    assert!(lab.connects(&lab.bystander, true, PORT));
    drop(ssh);
    lab.assert_host_untouched();
}

#[test]
fn release_restores_the_exact_prior_ruleset_and_other_tables_are_never_touched() {
    if !can_run("release_restores_the_exact_prior_ruleset_and_other_tables_are_never_touched") {
        return;
    }
    let lab = Lab::new("rel", 6);
    // Somebody else's firewall in the victim's namespace.
    let other = r#"
table inet other {
    chain input {
        type filter hook input priority filter; policy accept;
        tcp dport 9 counter accept
    }
}
table ip legacy {
    set friends {
        type ipv4_addr
        elements = { 192.0.2.1 }
    }
    chain c {
        type filter hook output priority 10; policy accept;
    }
}
"#;
    let path = std::env::temp_dir().join(format!("picket-t-rel-{}.nft", std::process::id()));
    std::fs::write(&path, other).unwrap();
    lab.nft(&["-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    let snapshot = || (lab.nft(&["list", "ruleset"]), lab.nft(&["-a", "list", "ruleset"]));
    let pristine = snapshot();

    let mut net = NetContainment::open(lab.opts()).unwrap();
    net.block(&[(lab.bystander4(), None), (lab.bystander6(), None)]).unwrap();
    let before = snapshot();

    net.isolate(&Isolation { allow: vec!["198.51.100.0/24".parse().unwrap()], ..Isolation::default() })
        .unwrap();
    assert_ne!(snapshot(), before);
    net.isolate(&Isolation { allow: vec!["203.0.113.0/24".parse().unwrap()], dhcp: true, mgmt: vec![] })
        .unwrap();
    net.release().unwrap();
    assert_eq!(snapshot(), before, "release did not restore the ruleset byte for byte");
    // Releasing again changes nothing and is no error.
    net.release().unwrap();
    assert_eq!(snapshot(), before);

    net.remove_table().unwrap();
    assert_eq!(snapshot(), pristine, "removing picket's table touched another table");
    net.remove_table().unwrap();
    assert!(net.blocked().unwrap().is_empty());
    lab.assert_host_untouched();
}

#[test]
fn a_table_deleted_behind_picket_is_recreated_by_the_next_block() {
    if !can_run("a_table_deleted_behind_picket_is_recreated_by_the_next_block") {
        return;
    }
    let lab = Lab::new("gone", 7);
    let mut net = NetContainment::open(lab.opts()).unwrap();
    lab.nft(&["delete", "table", "inet", "picket"]);
    assert!(net.blocked().unwrap().is_empty());
    assert!(!net.is_isolated().unwrap());
    net.release().unwrap();
    net.block(&[(lab.attacker4(), None)]).unwrap();
    assert!(!lab.connects(&lab.attacker, false, PORT));
    // A second open keeps what is blocked (restart of the agent).
    let mut again = NetContainment::open(lab.opts()).unwrap();
    assert_eq!(again.blocked().unwrap().len(), 1);
    assert!(!lab.connects(&lab.attacker, false, PORT));
    lab.assert_host_untouched();
}

#[test]
fn a_missing_or_failing_nft_and_bad_input_are_errors_not_panics() {
    if !can_run("a_missing_or_failing_nft_and_bad_input_are_errors_not_panics") {
        return;
    }
    let lab = Lab::new("err", 8);
    let missing = NetOptions { nft: PathBuf::from("/nonexistent/nft"), ..lab.opts() };
    assert!(matches!(NetContainment::open(missing), Err(NetError::NftMissing { .. })));
    let failing = NetOptions { nft: PathBuf::from("false"), ..lab.opts() };
    assert!(matches!(NetContainment::open(failing), Err(NetError::NftFailed { .. })));
    let no_ns = NetOptions { netns: Some("picket-t-no-such-namespace".into()), ..NetOptions::default() };
    assert!(matches!(NetContainment::open(no_ns), Err(NetError::Netns { .. })));
    // Nothing was created by the failed opens.
    assert_eq!(lab.nft(&["list", "ruleset"]), "");

    let mut net = NetContainment::open(lab.opts()).unwrap();
    for bad in ["127.0.0.1", "0.0.0.0", "::", "ff02::1"] {
        let err = net.block(&[(lab.attacker4(), None), (bad.parse().unwrap(), None)]).unwrap_err();
        assert!(matches!(err, NetError::InvalidAddress { .. }), "{bad}: {err}");
    }
    let err = net.block(&[(lab.attacker4(), Some(Duration::ZERO))]).unwrap_err();
    assert!(matches!(err, NetError::InvalidTtl { .. }));
    // A refused call blocks nothing at all, not even its valid addresses.
    assert!(net.blocked().unwrap().is_empty());
    let err = net.isolate(&Isolation { allow: vec!["0.0.0.0/0".parse().unwrap()], ..Isolation::default() });
    assert!(matches!(err, Err(NetError::InvalidNetwork { .. })));
    assert!(!net.is_isolated().unwrap());
    lab.assert_host_untouched();
}
