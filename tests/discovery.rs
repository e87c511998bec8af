//! Discovery answers what the loaded mapping supports: no more, no less.

mod support;

use reqwest::Method;
use serde_json::Value;
use support::*;

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn names(schema: &Value) -> Vec<String> {
    schema["attributes"]
        .as_array()
        .expect("attributes")
        .iter()
        .map(|a| a["name"].as_str().expect("name").to_owned())
        .collect()
}

fn attribute<'a>(schema: &'a Value, name: &str) -> &'a Value {
    schema["attributes"]
        .as_array()
        .expect("attributes")
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("{name} advertised"))
}

#[tokio::test]
async fn discovery_matches_the_mapping() {
    let h = Harness::with_example_data().await;

    let (status, headers, spc) = h.get("/ServiceProviderConfig").await;
    assert_eq!(status, 200);
    assert_eq!(content_type(&headers), Some(SCIM_MEDIA_TYPE));
    assert_eq!(spc["patch"]["supported"], true);
    assert_eq!(spc["filter"]["supported"], true);
    assert_eq!(spc["filter"]["maxResults"], 100);
    for unsupported in ["bulk", "sort", "etag", "changePassword"] {
        assert_eq!(spc[unsupported]["supported"], false, "{unsupported}");
    }
    assert_eq!(spc["authenticationSchemes"][0]["type"], "oauthbearertoken");

    let (status, _, types) = h.get("/ResourceTypes").await;
    assert_eq!(status, 200);
    let mut ids: Vec<&str> = types["Resources"]
        .as_array()
        .expect("list")
        .iter()
        .map(|t| t["id"].as_str().expect("id"))
        .collect();
    ids.sort();
    assert_eq!(ids, ["Group", "User"]);
    let (status, _, user_type) = h.get("/ResourceTypes/User").await;
    assert_eq!(status, 200);
    assert_eq!(user_type["endpoint"], "/Users");
    assert_eq!(user_type["schemaExtensions"][0]["schema"], ENTERPRISE);

    let (status, _, schemas) = h.get("/Schemas").await;
    assert_eq!(status, 200);
    assert_eq!(schemas["totalResults"], 3);

    let (_, _, user) = h.get(&format!("/Schemas/{USER_SCHEMA}")).await;
    // Exactly the mapped attributes; `password`, `locale` and `groups` are accepted and
    // dropped (writes.ignore), so they are not advertised.
    assert_eq!(
        names(&user),
        [
            "userName",
            "externalId",
            "name",
            "displayName",
            "title",
            "emails",
            "phoneNumbers",
            "active",
            "roles"
        ]
    );
    let user_name = attribute(&user, "userName");
    assert_eq!(user_name["required"], true);
    assert_eq!(user_name["uniqueness"], "server");
    assert_eq!(user_name["mutability"], "readWrite");
    let active = attribute(&user, "active");
    assert_eq!(active["type"], "boolean");
    assert_eq!(
        active["mutability"], "readWrite",
        "written through actions, so writable"
    );
    let emails = attribute(&user, "emails");
    assert_eq!(emails["multiValued"], true);
    let subs: Vec<&str> = emails["subAttributes"]
        .as_array()
        .expect("subs")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(subs, ["value", "type", "primary"]);
    assert_eq!(attribute(&user, "externalId")["caseExact"], true);

    let (_, _, enterprise) = h.get(&format!("/Schemas/{ENTERPRISE}")).await;
    assert_eq!(names(&enterprise), ["department", "manager"]);
    // manager: exactly the sub-attributes the mapping gives (value, and the $ref its
    // `reference` renders), not the RFC's readOnly displayName it cannot fill.
    let manager = attribute(&enterprise, "manager");
    assert_eq!(manager["type"], "complex");
    let subs: Vec<(&str, &str, &str)> = manager["subAttributes"]
        .as_array()
        .expect("subs")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().expect("name"),
                s["type"].as_str().expect("type"),
                s["mutability"].as_str().expect("mutability"),
            )
        })
        .collect();
    assert_eq!(
        subs,
        [
            ("value", "string", "readWrite"),
            ("$ref", "reference", "readWrite")
        ]
    );
    assert_eq!(
        manager["subAttributes"][1]["referenceTypes"],
        serde_json::json!(["User"])
    );
    let (_, _, group) = h.get(&format!("/Schemas/{GROUP_SCHEMA}")).await;
    assert_eq!(names(&group), ["displayName", "externalId", "members"]);
    // Teams have no external id: the common attribute is accepted and dropped (readOnly).
    assert_eq!(attribute(&group, "externalId")["mutability"], "readOnly");
    let members = attribute(&group, "members");
    let reference = members["subAttributes"]
        .as_array()
        .expect("subs")
        .iter()
        .find(|s| s["name"] == "$ref")
        .expect("$ref");
    assert_eq!(reference["referenceTypes"], serde_json::json!(["User"]));

    // Every advertised top-level User attribute is really served by a read.
    let (_, _, list) = h.get("/Users?count=100").await;
    for name in names(&user) {
        let served = list["Resources"]
            .as_array()
            .expect("users")
            .iter()
            .any(|u| u.get(&name).is_some());
        assert!(served, "{name} is advertised but no user carries it");
    }
}

#[tokio::test]
async fn discovery_errors() {
    let h = Harness::start().await;
    let cases: [(Method, &str, Option<&[u8]>, u16); 7] = [
        (Method::GET, "/Schemas/urn:nope", None, 404),
        (Method::GET, "/ResourceTypes/Nope", None, 404),
        (Method::POST, "/Schemas", Some(b"not json at all"), 405),
        (Method::PUT, "/ServiceProviderConfig", Some(b"{}"), 405),
        (Method::PATCH, "/ResourceTypes/User", Some(b"<xml/>"), 405),
        (
            Method::DELETE,
            "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User",
            None,
            405,
        ),
        (Method::POST, "/ResourceTypes", Some(b"{}"), 405),
    ];
    for (method, path, body, want) in cases {
        let (status, headers, body) = match body {
            Some(b) => h.send_bytes(method.clone(), path, b.to_vec()).await,
            None => h.send(method.clone(), path, None).await,
        };
        assert_eq!(status.as_u16(), want, "{method} {path}");
        assert_eq!(
            content_type(&headers),
            Some(SCIM_MEDIA_TYPE),
            "{method} {path}"
        );
        assert_scim_error(&format!("{method} {path}"), &body, want, None);
    }
}
