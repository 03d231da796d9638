//! A real OpenID Connect provider for sign-in tests: `scripts/oidc-provider`
//! (authlib's JOSE signs RS256 ID tokens with a key made at start), on a
//! free loopback port, approving device sign-ins as one user in some groups.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct Provider {
    /// `http://127.0.0.1:PORT`, its issuer.
    pub issuer: String,
    child: Child,
}

impl Provider {
    pub fn start(client_id: &str, user: &str, groups: &str) -> Provider {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/oidc-provider");
        let mut child = Command::new("python3")
            .arg(script)
            .args([
                "--port",
                "0",
                "--client-id",
                client_id,
                "--user",
                user,
                "--groups",
                groups,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with authlib (scripts/test installs it)");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let issuer = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the provider did not start: {first:?}"))
            .to_string();
        Provider { issuer, child }
    }

    /// An ID token minted outside the sign-in flow: `query` sets its
    /// lifetime (`exp=-60`), issuer (`iss=URL`) or a foreign key (`foreign=1`).
    pub fn mint(&self, query: &str) -> String {
        let body: serde_json::Value = reqwest::blocking::get(format!("{}/mint?{query}", self.issuer))
            .unwrap()
            .json()
            .unwrap();
        body["id_token"].as_str().unwrap().to_string()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
