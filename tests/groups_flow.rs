//! Groups with members, over HTTP, through the gateway to the demo Blacksmith API: Okta's
//! group-push flow, the PATCH dialects of Okta and Entra, member values the upstream cannot
//! know, reads that skip the member list, bounded concurrency on large adds, partial
//! failures (reported or compensated), and a 5,000-member group read page by page.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::header::LOCATION;
use reqwest::StatusCode;
use serde_json::{json, Value};

use scimgate::demo::{Fault, RecordedRequest};
use support::{
    assert_scim_error, content_type, filter_query, mapping_variant, Harness, Reply, COMPANY,
    GROUP_SCHEMA, LIST_SCHEMA, PATCH_SCHEMA, SCIM_MEDIA_TYPE,
};

fn patch_body(operations: Value) -> Value {
    json!({"schemas": [PATCH_SCHEMA], "Operations": operations})
}

/// SCIM member references for upstream user ids.
fn member_refs(ids: &[i64]) -> Value {
    Value::Array(
        ids.iter()
            .map(|id| json!({"value": id.to_string()}))
            .collect(),
    )
}

fn group_body(name: &str, members: &[i64]) -> Value {
    json!({"schemas": [GROUP_SCHEMA], "displayName": name, "members": member_refs(members)})
}

fn team_path(team: i64) -> String {
    format!("/api/v1/companies/{COMPANY}/teams/{team}")
}

fn members_path(team: i64) -> String {
    format!("{}/members", team_path(team))
}

/// Member writes (`POST`/`PUT`/`DELETE` on a team's members) as sorted `METHOD path`.
fn member_writes(calls: &[RecordedRequest]) -> Vec<String> {
    let mut writes: Vec<String> = calls
        .iter()
        .filter(|c| c.method != "GET" && c.path.contains("/members"))
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    writes.sort();
    writes
}

/// Member-list reads (`GET …/teams/{id}/members`).
fn member_reads(calls: &[RecordedRequest]) -> Vec<&RecordedRequest> {
    calls
        .iter()
        .filter(|c| c.method == "GET" && c.path.ends_with("/members"))
        .collect()
}

/// The decoded query pairs of a recorded request.
fn query_pairs(call: &RecordedRequest) -> Vec<(String, String)> {
    url::form_urlencoded::parse(call.query.as_deref().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn members_of(h: &Harness, team: i64) -> Vec<i64> {
    h.upstream
        .team_members(COMPANY, team)
        .unwrap_or_else(|| panic!("team {team} exists upstream"))
}

fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort_unstable();
    ids
}

/// The `value`s of a SCIM `members` array, in answer order.
fn member_values(context: &str, members: &Value) -> Vec<String> {
    members
        .as_array()
        .unwrap_or_else(|| panic!("{context}: members must be an array, got {members}"))
        .iter()
        .map(|m| {
            m["value"]
                .as_str()
                .unwrap_or_else(|| panic!("{context}: member value must be a string in {m}"))
                .to_owned()
        })
        .collect()
}

fn strings(ids: &[i64]) -> BTreeSet<String> {
    ids.iter().map(i64::to_string).collect()
}

/// Replaces `#0`…`#9` in every string of `template` with the given user ids.
fn fill(template: &Value, ids: &[i64]) -> Value {
    match template {
        Value::String(s) => {
            let mut out = s.clone();
            for (i, id) in ids.iter().enumerate().take(10) {
                out = out.replace(&format!("#{i}"), &id.to_string());
            }
            Value::String(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| fill(v, ids)).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), fill(v, ids))).collect())
        }
        other => other.clone(),
    }
}

fn assert_no_content(context: &str, reply: &Reply) {
    let (status, _, body) = reply;
    assert_eq!(*status, StatusCode::NO_CONTENT, "{context}: {body}");
    assert_eq!(*body, Value::Null, "{context}: a 204 has no body");
}

#[tokio::test]
async fn okta_group_push_flow() {
    let h = Harness::start().await;
    let users = h.upstream.seed_users(COMPANY, 4);
    let (a, b, c, d) = (users[0], users[1], users[2], users[3]);
    let exists = format!("/Groups?{}", filter_query("displayName eq \"Engineering\""));

    // Existence check: pushed down as `name=`, nothing there yet.
    let mark = h.mark();
    let (status, headers, body) = h.get(&exists).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(content_type(&headers), Some(SCIM_MEDIA_TYPE));
    assert_eq!(body["schemas"], json!([LIST_SCHEMA]), "{body}");
    assert_eq!(body["totalResults"], 0, "{body}");
    assert_eq!(body["Resources"], json!([]), "{body}");
    let calls = h.calls_since(mark);
    assert_eq!(calls.len(), 1, "one list call: {calls:?}");
    assert_eq!(calls[0].method, "GET");
    assert_eq!(calls[0].path, format!("/api/v1/companies/{COMPANY}/teams"));
    assert!(
        query_pairs(&calls[0]).contains(&("name".into(), "Engineering".into())),
        "the filter is pushed down as name=: {:?}",
        calls[0].query
    );

    // Create with no members.
    let (status, headers, group) = h.post("/Groups", &group_body("Engineering", &[])).await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let id = group["id"].as_str().expect("string id").to_owned();
    let team: i64 = id.parse().expect("integer upstream id");
    let location = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("Location header");
    assert_eq!(location, h.url(&format!("/Groups/{id}")));
    assert_eq!(group["meta"]["location"], location, "{group}");
    assert_eq!(group["displayName"], "Engineering", "{group}");
    assert_eq!(group["members"], json!([]), "{group}");
    assert_eq!(
        h.upstream.team(COMPANY, team).expect("team")["name"],
        "Engineering"
    );
    assert!(members_of(&h, team).is_empty());

    // The existence check now finds it.
    let (_, _, body) = h.get(&exists).await;
    assert_eq!(body["totalResults"], 1, "{body}");
    assert_eq!(body["Resources"][0]["id"], id.as_str(), "{body}");

    let gpath = format!("/Groups/{id}");
    let post = format!("POST {}", members_path(team));
    let delete = |user: i64| format!("DELETE {}/{user}", members_path(team));
    let put = format!("PUT {}", members_path(team));
    // (step, query, operations, answer status, members afterwards, member writes)
    type Step = (
        &'static str,
        &'static str,
        Value,
        StatusCode,
        Vec<i64>,
        Vec<String>,
    );
    let steps: Vec<Step> = vec![
        (
            "add two members",
            "",
            json!([{"op": "add", "path": "members", "value": [
                {"value": a.to_string(), "display": "user1@example.com"},
                {"value": b.to_string()}
            ]}]),
            StatusCode::NO_CONTENT,
            vec![a, b],
            vec![post.clone(), post.clone()],
        ),
        (
            "remove by filter together with an add",
            "",
            json!([
                {"op": "remove", "path": format!("members[value eq \"{a}\"]")},
                {"op": "add", "path": "members", "value": [{"value": c.to_string()}]}
            ]),
            StatusCode::NO_CONTENT,
            vec![b, c],
            vec![delete(a), post.clone()],
        ),
        (
            "replace all members: one PUT",
            "",
            json!([{"op": "replace", "path": "members", "value": member_refs(&[a, d])}]),
            StatusCode::NO_CONTENT,
            vec![a, d],
            vec![put.clone()],
        ),
        (
            "rename with the no-path replace Okta sends",
            "",
            json!([{"op": "replace", "value": {"id": id, "displayName": "Engineering Team"}}]),
            StatusCode::NO_CONTENT,
            vec![a, d],
            vec![],
        ),
        (
            "attributes= asks for the group back",
            "?attributes=displayName",
            json!([{"op": "add", "path": "members", "value": [{"value": b.to_string()}]}]),
            StatusCode::OK,
            vec![a, b, d],
            vec![post.clone()],
        ),
    ];
    for (step, query, operations, want, members, writes) in steps {
        let mark = h.mark();
        let reply = h
            .patch(&format!("{gpath}{query}"), &patch_body(operations))
            .await;
        if want == StatusCode::NO_CONTENT {
            assert_no_content(step, &reply);
        } else {
            let (status, _, body) = &reply;
            assert_eq!(*status, want, "{step}: {body}");
            assert_eq!(body["id"], id.as_str(), "{step}: {body}");
            assert_eq!(body["schemas"], json!([GROUP_SCHEMA]), "{step}: {body}");
            assert_eq!(body["displayName"], "Engineering Team", "{step}: {body}");
            assert!(
                body.get("members").is_none(),
                "{step}: not asked for: {body}"
            );
        }
        assert_eq!(members_of(&h, team), members, "{step}: upstream membership");
        let calls = h.calls_since(mark);
        assert_eq!(member_writes(&calls), writes, "{step}: member calls");
        if !query.is_empty() {
            assert!(member_reads(&calls).is_empty(), "{step}: {calls:?}");
        }
    }
    assert_eq!(
        h.upstream.team(COMPANY, team).expect("team")["name"],
        "Engineering Team"
    );

    // PUT: name and the whole membership.
    let mark = h.mark();
    let mut body = group_body("Platform", &[c, b]);
    body["id"] = json!(id);
    let (status, _, group) = h.put(&gpath, &body).await;
    assert_eq!(status, StatusCode::OK, "{group}");
    assert_eq!(group["displayName"], "Platform", "{group}");
    let values: BTreeSet<String> = member_values("PUT", &group["members"])
        .into_iter()
        .collect();
    assert_eq!(values, strings(&[b, c]), "{group}");
    assert_eq!(
        h.upstream.team(COMPANY, team).expect("team")["name"],
        "Platform"
    );
    assert_eq!(members_of(&h, team), sorted(vec![b, c]));
    assert_eq!(member_writes(&h.calls_since(mark)), vec![put.clone()]);

    // Delete, then it is gone.
    let reply = h.delete(&gpath).await;
    assert_no_content("DELETE", &reply);
    assert!(h.upstream.team(COMPANY, team).is_none());
    let (status, _, body) = h.get(&gpath).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_scim_error("GET after DELETE", &body, 404, None);
}

#[tokio::test]
async fn member_patch_dialects_reduce_to_net_calls() {
    let h = Harness::start().await;
    let users = h.upstream.seed_users(COMPANY, 3);
    // (case, initial members by index, operations with #i for user i, members afterwards
    // by index, member writes: (method, Some(index) for DELETE …/members/{id}))
    type Row = (
        &'static str,
        Vec<usize>,
        Value,
        Vec<usize>,
        Vec<(&'static str, Option<usize>)>,
    );
    let rows: Vec<Row> = vec![
        (
            "Entra remove with path members and a value array",
            vec![0, 1, 2],
            json!([{"op": "Remove", "path": "members", "value": [{"value": "#0"}, {"value": "#2"}]}]),
            vec![1],
            vec![("DELETE", Some(0)), ("DELETE", Some(2))],
        ),
        (
            "remove path members without a value removes everyone",
            vec![0, 1, 2],
            json!([{"op": "remove", "path": "members"}]),
            vec![],
            vec![("PUT", None)],
        ),
        (
            "add then remove of one member makes no member call",
            vec![0],
            json!([
                {"op": "add", "path": "members", "value": [{"value": "#1"}]},
                {"op": "remove", "path": "members[value eq \"#1\"]"}
            ]),
            vec![0],
            vec![],
        ),
        (
            "remove then add of one member makes no member call",
            vec![0],
            json!([
                {"op": "remove", "path": "members[value eq \"#0\"]"},
                {"op": "add", "path": "members", "value": [{"value": "#0"}]}
            ]),
            vec![0],
            vec![],
        ),
        (
            "remove by an or-filter",
            vec![0, 1, 2],
            json!([{"op": "remove", "path": "members[value eq \"#0\" or value eq \"#1\"]"}]),
            vec![2],
            vec![("DELETE", Some(0)), ("DELETE", Some(1))],
        ),
        (
            "adding a member already there is fine (upstream 200)",
            vec![0],
            json!([{"op": "add", "path": "members", "value": [{"value": "#0"}, {"value": "#1"}]}]),
            vec![0, 1],
            vec![("POST", None), ("POST", None)],
        ),
        (
            "removing a non-member is fine (upstream 404)",
            vec![0],
            json!([{"op": "remove", "path": "members[value eq \"#2\"]"}]),
            vec![0],
            vec![("DELETE", Some(2))],
        ),
        (
            "Entra add with one value object and numeric value",
            vec![],
            json!([{"op": "add", "path": "members", "value": {"value": "#2"}}]),
            vec![2],
            vec![("POST", None)],
        ),
    ];
    for (n, (case, initial, operations, after, writes)) in rows.into_iter().enumerate() {
        let initial: Vec<i64> = initial.iter().map(|&i| users[i]).collect();
        let team = h
            .upstream
            .seed_team(COMPANY, &format!("team {n}"), &initial);
        let mark = h.mark();
        let reply = h
            .patch(
                &format!("/Groups/{team}"),
                &patch_body(fill(&operations, &users)),
            )
            .await;
        assert_no_content(case, &reply);
        let after: Vec<i64> = sorted(after.iter().map(|&i| users[i]).collect());
        assert_eq!(members_of(&h, team), after, "{case}: upstream membership");
        let mut want: Vec<String> = writes
            .iter()
            .map(|(method, user)| match user {
                Some(i) => format!("{method} {}/{}", members_path(team), users[*i]),
                None => format!("{method} {}", members_path(team)),
            })
            .collect();
        want.sort();
        assert_eq!(
            member_writes(&h.calls_since(mark)),
            want,
            "{case}: member calls"
        );
    }
}

#[tokio::test]
async fn members_carry_value_display_ref_and_type() {
    let h = Harness::start().await;
    let users = h.upstream.seed_users(COMPANY, 3);
    let team = h.upstream.seed_team(COMPANY, "Readers", &users);
    let (status, _, group) = h.get(&format!("/Groups/{team}")).await;
    assert_eq!(status, StatusCode::OK, "{group}");
    let members = group["members"].as_array().expect("members").clone();
    assert_eq!(members.len(), 3, "{group}");
    for (i, user) in users.iter().enumerate() {
        let m = members
            .iter()
            .find(|m| m["value"].as_str() == Some(user.to_string().as_str()))
            .unwrap_or_else(|| panic!("user {user} in {group}"));
        let want = json!({
            "value": user.to_string(),
            "display": format!("user{}@example.com", i + 1),
            "$ref": h.url(&format!("/Users/{user}")),
            "type": "User",
        });
        assert_eq!(*m, want, "member {user}");
        // `$ref` names the user through the gateway.
        let path = m["$ref"].as_str().expect("$ref").replacen(&h.base, "", 1);
        let (status, _, body) = h.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body["id"], user.to_string(), "{path}: {body}");
    }
}

#[tokio::test]
async fn reads_that_do_not_want_members_make_no_member_call() {
    let h = Harness::start().await;
    let users = h.upstream.seed_users(COMPANY, 3);
    let team = h.upstream.seed_team(COMPANY, "Readers", &users);
    let _other = h.upstream.seed_team(COMPANY, "Writers", &users[..1]);
    let by_name = filter_query("displayName eq \"Readers\"");
    // (path, members in the answer, member-list calls)
    let cases: Vec<(String, bool, usize)> = vec![
        (format!("/Groups/{team}"), true, 1),
        (
            format!("/Groups/{team}?excludedAttributes=members"),
            false,
            0,
        ),
        (format!("/Groups/{team}?attributes=displayName"), false, 0),
        (
            format!("/Groups/{team}?attributes=displayName,members"),
            true,
            1,
        ),
        (
            format!("/Groups/{team}?excludedAttributes=displayName"),
            true,
            1,
        ),
        ("/Groups".to_owned(), true, 2),
        ("/Groups?excludedAttributes=members".to_owned(), false, 0),
        ("/Groups?attributes=displayName".to_owned(), false, 0),
        (
            format!("/Groups?{by_name}&excludedAttributes=members"),
            false,
            0,
        ),
        (
            format!("/Groups?{by_name}&attributes=displayName"),
            false,
            0,
        ),
        (format!("/Groups?{by_name}"), true, 1),
    ];
    for (path, with_members, reads) in cases {
        let mark = h.mark();
        let (status, _, body) = h.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let docs = match body["Resources"].as_array() {
            Some(list) => list.clone(),
            None => vec![body.clone()],
        };
        assert!(!docs.is_empty(), "{path}: {body}");
        for doc in &docs {
            assert_eq!(doc.get("members").is_some(), with_members, "{path}: {doc}");
        }
        let calls = h.calls_since(mark);
        assert_eq!(member_reads(&calls).len(), reads, "{path}: {calls:?}");
    }
}

#[tokio::test]
async fn member_values_that_name_no_user_are_refused_before_any_call() {
    let h = Harness::start().await;
    let users = h.upstream.seed_users(COMPANY, 1);
    let team = h.upstream.seed_team(COMPANY, "Strict", &users);
    let gpath = format!("/Groups/{team}");
    let bad = [
        "abc",
        "../1",
        "1/2",
        "",
        " 1",
        "1.5",
        "-1",
        "99999999999999999999",
        "9999999999999999999", // digits, but beyond the upstream's 64-bit ids
    ];
    for value in bad {
        let requests: Vec<(&str, reqwest::Method, String, Value)> = vec![
            (
                "PATCH add",
                reqwest::Method::PATCH,
                gpath.clone(),
                patch_body(json!([{"op": "add", "path": "members", "value": [{"value": value}]}])),
            ),
            (
                "PATCH remove by filter",
                reqwest::Method::PATCH,
                gpath.clone(),
                patch_body(
                    json!([{"op": "remove", "path": format!("members[value eq {}]", json!(value))}]),
                ),
            ),
            (
                "PATCH replace",
                reqwest::Method::PATCH,
                gpath.clone(),
                patch_body(
                    json!([{"op": "replace", "path": "members", "value": [{"value": value}]}]),
                ),
            ),
            (
                "PUT",
                reqwest::Method::PUT,
                gpath.clone(),
                json!({"schemas": [GROUP_SCHEMA], "displayName": "Strict", "members": [{"value": value}]}),
            ),
            (
                "POST",
                reqwest::Method::POST,
                "/Groups".to_owned(),
                json!({"schemas": [GROUP_SCHEMA], "displayName": "New", "members": [{"value": value}]}),
            ),
        ];
        for (what, method, path, body) in requests {
            let context = format!("{what} with member {value:?}");
            let mark = h.mark();
            let (status, _, answer) = h.send(method, &path, Some(&body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{context}: {answer}");
            assert_scim_error(&context, &answer, 400, Some("invalidValue"));
            let calls = h.calls_since(mark);
            assert!(
                calls.iter().all(|c| !c.path.contains("/members")),
                "{context}: {calls:?}"
            );
            assert!(
                calls.iter().all(|c| c.method == "GET"),
                "{context}: nothing is written: {calls:?}"
            );
            assert_eq!(members_of(&h, team), users, "{context}");
        }
    }
}

#[tokio::test]
async fn unknown_users_in_an_add() {
    let unknown: i64 = 987_654;
    // (case, mapping policy, other members added)
    let cases = [
        ("skip", "skip", true),
        ("reject_batch", "reject_batch", false),
    ];
    for (case, policy, others_added) in cases {
        let (_dir, mapping) = mapping_variant(
            "groups.toml",
            "unknown_members = \"skip\"",
            &format!("unknown_members = \"{policy}\""),
        );
        let h = Harness::start_with(mapping, |_| {}).await;
        let users = h.upstream.seed_users(COMPANY, 3);
        let team = h.upstream.seed_team(COMPANY, "Mixed", &users[..1]);
        let mark = h.mark();
        let (status, _, body) = h
            .patch(
                &format!("/Groups/{team}"),
                &patch_body(json!([{"op": "add", "path": "members",
                    "value": member_refs(&[users[1], unknown, users[2]])}])),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: {body}");
        assert_scim_error(case, &body, 400, Some("invalidValue"));
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(&unknown.to_string()),
            "{case}: names it: {detail}"
        );
        assert!(
            !detail.contains(&users[1].to_string()) && !detail.contains(&users[2].to_string()),
            "{case}: names only the unknown one: {detail}"
        );
        let writes = member_writes(&h.calls_since(mark));
        if others_added {
            assert_eq!(members_of(&h, team), users, "{case}");
            assert_eq!(writes.len(), 3, "{case}: {writes:?}");
        } else {
            assert_eq!(members_of(&h, team), users[..1].to_vec(), "{case}");
            assert!(
                writes.is_empty(),
                "{case}: no member call at all: {writes:?}"
            );
            // With every member known, the same policy adds them.
            let reply = h
                .patch(
                    &format!("/Groups/{team}"),
                    &patch_body(json!([{"op": "add", "path": "members",
                        "value": member_refs(&users[1..])}])),
                )
                .await;
            assert_no_content(case, &reply);
            assert_eq!(members_of(&h, team), users, "{case}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_member_add_keeps_to_the_configured_concurrency() {
    // (mapping concurrency, or the shipped one)
    for concurrency in [None, Some(3)] {
        let want = concurrency.unwrap_or(8);
        let (_dir, h) = match concurrency {
            Some(n) => {
                let (dir, mapping) = mapping_variant(
                    "groups.toml",
                    "concurrency = 8 ",
                    &format!("concurrency = {n} "),
                );
                (Some(dir), Harness::start_with(mapping, |_| {}).await)
            }
            None => (None, Harness::start().await),
        };
        let users = h.upstream.seed_users(COMPANY, 1000);
        let team = h.upstream.seed_team(COMPANY, "Everyone", &[]);
        h.upstream.set_member_call_latency(Duration::from_millis(5));
        let mark = h.mark();
        let reply = h
            .patch(
                &format!("/Groups/{team}"),
                &patch_body(
                    json!([{"op": "add", "path": "members", "value": member_refs(&users)}]),
                ),
            )
            .await;
        assert_no_content(&format!("concurrency {want}"), &reply);
        assert_eq!(members_of(&h, team), users, "concurrency {want}");
        assert_eq!(member_writes(&h.calls_since(mark)).len(), 1000);
        assert_eq!(
            h.upstream.max_member_calls_in_flight(),
            want,
            "member calls in flight"
        );
    }
}

/// What the failure report says of one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Applied,
    NotApplied,
    Unknown,
}

/// One per-member entry of a partial-failure report.
#[derive(Debug)]
struct Entry {
    verb: String,
    value: String,
    state: State,
    why: String,
}

/// Splits a partial-failure detail into its counts (applied, not applied, unknown) and its
/// per-member entries (`add 1042: applied (succeeded); …`).
fn parse_report(detail: &str) -> ((usize, usize, usize), Vec<Entry>) {
    let at = detail
        .find(" unknown. ")
        .unwrap_or_else(|| panic!("no summary in {detail}"));
    let (head, rest) = (&detail[..at], &detail[at + " unknown. ".len()..]);
    let counts: Vec<usize> = head
        .rsplit_once("): ")
        .unwrap_or_else(|| panic!("no counts in {detail}"))
        .1
        .split(", ")
        .map(|part| {
            part.split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("count {part:?} in {detail}"))
        })
        .collect();
    assert_eq!(counts.len(), 3, "{detail}");
    let entries = rest
        .split("; ")
        .map(|line| {
            let (who, what) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("entry {line:?}"));
            let (verb, value) = who.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
            let (state, why) = [
                ("applied ", State::Applied),
                ("not applied ", State::NotApplied),
                ("unknown (may still land) ", State::Unknown),
                ("unknown (membership could not be re-read) ", State::Unknown),
            ]
            .iter()
            .find_map(|(prefix, state)| what.strip_prefix(prefix).map(|why| (*state, why)))
            .unwrap_or_else(|| panic!("state of {line:?}"));
            Entry {
                verb: verb.to_owned(),
                value: value.to_owned(),
                state,
                why: why.trim_matches(|c| c == '(' || c == ')').to_owned(),
            }
        })
        .collect();
    ((counts[0], counts[1], counts[2]), entries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_member_call_is_reported_or_compensated() {
    const HANG: Duration = Duration::from_millis(1200);
    // (case, policy, fault, status, counts (applied, not applied, unknown), the failed
    // member's state and reason)
    let cases = [
        (
            "report, 500",
            "report",
            Fault::Status500,
            StatusCode::BAD_GATEWAY,
            (99, 1, 0),
            State::NotApplied,
            "failed: upstream 500",
        ),
        (
            "report, timeout",
            "report",
            Fault::Hang(HANG),
            StatusCode::GATEWAY_TIMEOUT,
            (99, 0, 1),
            State::Unknown,
            "timed out",
        ),
        (
            "compensate, 500",
            "compensate",
            Fault::Status500,
            StatusCode::BAD_GATEWAY,
            (0, 100, 0),
            State::NotApplied,
            "failed: upstream 500",
        ),
        (
            "compensate, timeout",
            "compensate",
            Fault::Hang(HANG),
            StatusCode::GATEWAY_TIMEOUT,
            (0, 99, 1),
            State::Unknown,
            "timed out",
        ),
    ];
    let runs = cases.map(|case| async move {
        let (name, policy, fault, want, counts, failed_state, failed_why) = case;
        let (_dir, mapping) = mapping_variant(
            "groups.toml",
            "on_partial_failure = \"report\"",
            &format!("on_partial_failure = \"{policy}\""),
        );
        let h = Harness::start_with(mapping, |config| config.upstream.timeout_ms = 300).await;
        let users = h.upstream.seed_users(COMPANY, 100);
        let team = h.upstream.seed_team(COMPANY, "Flaky", &[]);
        h.upstream.fail_member_call(37, fault);
        let started = tokio::time::Instant::now();
        let (status, _, body) = h
            .patch(
                &format!("/Groups/{team}"),
                &patch_body(
                    json!([{"op": "add", "path": "members", "value": member_refs(&users)}]),
                ),
            )
            .await;
        assert_eq!(status, want, "{name}: {body}");
        assert_scim_error(name, &body, want.as_u16(), None);
        let detail = body["detail"].as_str().unwrap_or_default();
        let (reported, entries) = parse_report(detail);
        assert_eq!(reported, counts, "{name}: {detail}");

        // One entry per member, all adds.
        let named: BTreeSet<String> = entries.iter().map(|e| e.value.clone()).collect();
        assert_eq!(entries.len(), 100, "{name}: {detail}");
        assert_eq!(named, strings(&users), "{name}: {detail}");
        assert!(entries.iter().all(|e| e.verb == "add"), "{name}: {detail}");

        // Exactly one member failed, and the report says how.
        let failed: Vec<&Entry> = entries
            .iter()
            .filter(|e| !e.why.starts_with("succeeded"))
            .collect();
        assert_eq!(failed.len(), 1, "{name}: {detail}");
        assert_eq!(failed[0].state, failed_state, "{name}: {detail}");
        assert_eq!(failed[0].why, failed_why, "{name}: {detail}");
        if policy == "compensate" {
            assert!(
                entries
                    .iter()
                    .filter(|e| e.why.starts_with("succeeded"))
                    .all(|e| e.why == "succeeded, undone" && e.state == State::NotApplied),
                "{name}: {detail}"
            );
        }

        // The upstream agrees with every member the report is sure about.
        let present = strings(&members_of(&h, team));
        for e in &entries {
            match e.state {
                State::Applied => assert!(present.contains(&e.value), "{name}: {e:?}"),
                State::NotApplied => assert!(!present.contains(&e.value), "{name}: {e:?}"),
                State::Unknown => {}
            }
        }

        // Once a hung call could have landed, the end state is as the policy promises.
        tokio::time::sleep_until(started + HANG + Duration::from_millis(300)).await;
        let present = members_of(&h, team);
        let failed_id: i64 = failed[0].value.parse().expect("integer member");
        if policy == "compensate" {
            assert!(
                present.is_empty(),
                "{name}: none of the 100 stay: {present:?}"
            );
        } else {
            let kept: Vec<i64> = users.iter().copied().filter(|&u| u != failed_id).collect();
            assert!(
                present == kept || present == users,
                "{name}: the 99 applied are kept: {present:?}"
            );
        }
    });
    futures::future::join_all(runs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_thousand_member_group_reads_back_in_fifty_pages() {
    let h = Harness::start().await;
    let users = h.upstream.seed_users(COMPANY, 5000);
    let team = h.upstream.seed_team(COMPANY, "Company", &users);
    let _small = h.upstream.seed_team(COMPANY, "Small", &users[..2]);

    let mark = h.mark();
    let (status, _, group) = h.get(&format!("/Groups/{team}")).await;
    assert_eq!(status, StatusCode::OK);
    let values = member_values("5000", &group["members"]);
    assert_eq!(values.len(), 5000, "no member twice");
    let values: BTreeSet<String> = values.into_iter().collect();
    assert_eq!(values, strings(&users));
    let calls = h.calls_since(mark);
    let reads = member_reads(&calls);
    assert_eq!(reads.len(), 50, "member pages");
    let mut pages = BTreeSet::new();
    for read in &reads {
        assert_eq!(read.path, members_path(team));
        let query = query_pairs(read);
        assert!(
            query.contains(&("per_page".into(), "100".into())),
            "{query:?}"
        );
        let page = query
            .iter()
            .find(|(k, _)| k == "page")
            .map(|(_, v)| v.clone())
            .expect("page parameter");
        pages.insert(page.parse::<usize>().expect("page number"));
    }
    assert_eq!(pages, (1..=50).collect::<BTreeSet<usize>>());

    for path in [
        "/Groups?excludedAttributes=members".to_owned(),
        format!(
            "/Groups?{}&excludedAttributes=members",
            filter_query("displayName eq \"Company\"")
        ),
    ] {
        let mark = h.mark();
        let (status, _, body) = h.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let listed = body["Resources"].as_array().expect("Resources");
        assert!(
            listed
                .iter()
                .any(|g| g["id"].as_str() == Some(team.to_string().as_str())),
            "{path}: {body}"
        );
        assert!(listed.iter().all(|g| g.get("members").is_none()), "{path}");
        let calls = h.calls_since(mark);
        assert!(member_reads(&calls).is_empty(), "{path}: {calls:?}");
    }
}
