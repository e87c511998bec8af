//! Third-party conformance: scim2-tester (the python-scim project's RFC 7643/7644 checker)
//! against `scimgate demo`, every published resource type checked. The script builds a
//! Python venv from pinned, hashed requirements on first use (`target/conformance-venv`).

use std::process::Command;

#[test]
fn scim2_tester_reports_no_failure() {
    let output = Command::new("bash")
        .arg("conformance/run-scim2-tester.sh")
        .env("CONFORMANCE_BIN", env!("CARGO_BIN_EXE_scimgate"))
        .output()
        .expect("run conformance/run-scim2-tester.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.contains(" passed, "))
        .unwrap_or("no summary line");
    assert!(
        output.status.success(),
        "scim2-tester failed ({summary}):\n{stdout}\n{stderr}"
    );
    assert!(summary.contains(" 0 failed"), "{summary}");
    assert!(
        stdout.contains("coverage: scim2-tester ran") && stdout.matches("coverage:").count() >= 2,
        "every published resource type must be checked:\n{stdout}"
    );
}
