//! Test and benchmark support: a throwaway PKI and a real mosquitto with TLS and client
//! certificates on a free loopback port. Not for production use; public so that the agent's
//! integration tests and the uplink's benchmarks share one copy.
#![allow(clippy::missing_panics_doc)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, a broker certificate for 127.0.0.1/localhost, client certificates for the agent and the
/// collector, and a rogue client certificate signed by nobody the broker trusts.
pub fn make_pki(dir: &Path) {
    let ossl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(dir));
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    ossl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=picket-test-ca"],
        ]
        .concat(),
    );
    let leaf = |name: &str, ext: &str| {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        ossl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN={name}"),
                ],
            ]
            .concat(),
        );
        ossl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    };
    leaf("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    leaf("agent", "extendedKeyUsage=clientAuth\n");
    leaf("collector", "extendedKeyUsage=clientAuth\n");
    ossl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "rogue.key", "-out", "rogue.crt", "-days", "2", "-subj", "/CN=rogue"],
        ]
        .concat(),
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A mosquitto of our own: TLS only, client certificates required, persistence on.
#[derive(Debug)]
pub struct Broker {
    dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Broker {
    pub fn new(dir: &Path) -> Broker {
        let port = free_port();
        std::fs::create_dir_all(dir.join("mq")).unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("mosquitto.conf"),
            format!(
                "user root\nallow_anonymous true\npersistence true\npersistence_location {d}/mq/\n\
                 autosave_interval 1\nlog_dest file {d}/mq/mosquitto.log\nlog_type error\nlog_type warning\n\
                 log_type notice\nmax_queued_messages 100000\nmax_packet_size 8388608\n\
                 listener {port} 127.0.0.1\ncafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n\
                 require_certificate true\n"
            ),
        )
        .unwrap();
        let mut b = Broker { dir: dir.to_owned(), port, child: None };
        b.start();
        b
    }

    pub fn start(&mut self) {
        let child = Command::new("mosquitto")
            .args(["-c", self.dir.join("mosquitto.conf").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "mosquitto did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (mosquitto saves its persistence file) and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
