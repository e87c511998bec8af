//! Membership behind its own upstream calls: reading it page by page, and applying a
//! [`MemberEdit`] as one call per member with bounded concurrency, a total deadline, and a
//! report (or compensation) when some calls fail. Nothing is silently dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

use super::resource::Ctx;
use crate::mapping::engine::id_is_plausible;
use crate::mapping::template::{scalar_text, Vars};
use crate::mapping::{
    Embedded, IdKind, MemberCall, Members, PartialFailure, UnknownMembers, UpdateBody,
};
use crate::scim::membership::{Change, MemberEdit};
use crate::scim::{ScimError, ScimType};
use crate::upstream::UpstreamError;

/// One member as read from the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub value: String,
    pub display: Option<String>,
}

/// What became of one member call.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// The call changed the membership.
    Changed,
    /// The upstream said it was already so.
    AlreadyDone,
    /// The upstream does not know this member.
    UnknownMember,
    /// The call failed; the text says how.
    Failed(String),
    /// The call was sent but its answer did not come in time: it may still land.
    TimedOut,
    /// The deadline passed before the call was sent.
    NotSent,
}

const NOT_STARTED: u8 = 0;
const IN_FLIGHT: u8 = 1;

/// Shortens a list of member ids for a message.
fn list(values: &[String]) -> String {
    const SHOWN: usize = 50;
    let mut text = values
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if values.len() > SHOWN {
        text.push_str(&format!(" and {} more", values.len() - SHOWN));
    }
    text
}

impl Ctx {
    fn members_spec(&self) -> Result<&Members, ScimError> {
        self.resource.members.as_ref().ok_or_else(|| {
            ScimError::bad_request(
                ScimType::InvalidPath,
                format!("{} has no members", self.resource.name),
            )
        })
    }

    /// Every member of `id`: from the group object (embedded model) or by paging through
    /// the member list.
    pub(super) async fn read_members(&self, id: &str) -> Result<Vec<Member>, ScimError> {
        let spec = self.members_spec()?;
        if let Some(embedded) = &spec.embedded {
            let obj = self.fetch(id).await?.ok_or_else(|| self.not_found(id))?;
            return Ok(embedded_ids(embedded, &obj)
                .into_iter()
                .map(|value| Member {
                    value,
                    display: None,
                })
                .collect());
        }
        let (Some(list), Some(value_path)) = (&spec.list, &spec.value) else {
            return Err(ScimError::bad_gateway(
                "the mapping gives no way to read members",
            ));
        };
        let (items, _) = self
            .fetch_window(list, Some(id), &[], 0, usize::MAX)
            .await?;
        items
            .iter()
            .map(|item| {
                let value = value_path.read(item).and_then(scalar_text).ok_or_else(|| {
                    ScimError::bad_gateway(format!(
                        "a member in the answer to {} has no value at {}",
                        list.route,
                        value_path.as_str()
                    ))
                })?;
                let display = spec
                    .display
                    .as_ref()
                    .and_then(|p| p.read(item))
                    .and_then(scalar_text);
                Ok(Member { value, display })
            })
            .collect()
    }

    /// Embedded model: re-reads the group, applies the edit to its id array and writes it
    /// back conditionally on the version read; a conflict starts over from a fresh read.
    async fn apply_embedded(
        &self,
        spec: &Members,
        embedded: &Embedded,
        id: &str,
        edit: &MemberEdit,
    ) -> Result<(), ScimError> {
        let update = self.resource.ops.update.as_ref().ok_or_else(|| {
            ScimError::bad_request(ScimType::Mutability, "this mapping cannot update groups")
        })?;
        let typed = |v: &str| -> Value {
            match (spec.member_id, v.parse::<i64>()) {
                (IdKind::Integer, Ok(n)) => Value::from(n),
                _ => Value::String(v.to_owned()),
            }
        };
        for attempt in 0..=embedded.max_retries {
            let obj = self.fetch(id).await?.ok_or_else(|| self.not_found(id))?;
            let current = embedded_ids(embedded, &obj);
            let mut next: Vec<String> = current.clone();
            match &edit.target {
                Some(target) => next = target.iter().cloned().collect(),
                None => {
                    for (value, change) in &edit.changes {
                        match change {
                            Change::Add if !next.contains(value) => next.push(value.clone()),
                            Change::Remove => next.retain(|v| v != value),
                            Change::Add => {}
                        }
                    }
                }
            }
            let same = next.len() == current.len() && next.iter().all(|v| current.contains(v));
            if same {
                return Ok(());
            }
            let ids = Value::Array(next.iter().map(|v| typed(v)).collect());
            let body = match self.resource.update_body {
                UpdateBody::Full => {
                    let mut whole = obj.clone();
                    embedded.ids.set(&mut whole, ids);
                    whole
                }
                UpdateBody::Partial => embedded.ids.wrap(ids),
            };
            let body = self.resource.wrap(body);
            let version = embedded
                .version
                .as_ref()
                .and_then(|p| p.read(&obj))
                .and_then(scalar_text);
            let vars = Vars {
                id: Some(id),
                tenant: Some(&self.tenant),
                ..Vars::default()
            };
            let response = self
                .send_with(
                    update,
                    &vars,
                    Some(id),
                    &[],
                    Some(&body),
                    version.as_deref(),
                )
                .await?;
            if embedded.conflict_status.contains(&response.status) {
                super::resource::conflict_pause(attempt).await;
                continue;
            }
            if self.is_error(&response) {
                return Err(self.upstream_error(&response, Some(id)));
            }
            return Ok(());
        }
        let mut err = ScimError::new(
            StatusCode::CONFLICT,
            format!(
                "{} {id} changed under each of {} attempts to update its members; retry",
                self.resource.name,
                embedded.max_retries + 1
            ),
        );
        err.retry_after = Some(1);
        Err(err)
    }

    /// Members as SCIM multi-valued attribute values.
    pub(super) fn members_json(&self, members: &[Member]) -> Value {
        let Some(spec) = &self.resource.members else {
            return json!([]);
        };
        Value::Array(
            members
                .iter()
                .map(|m| {
                    let mut v = json!({
                        "value": m.value,
                        "$ref": format!("{}/{}/{}", self.base_url, spec.member_endpoint, m.value),
                        "type": spec.member_type,
                    });
                    if let Some(d) = &m.display {
                        v["display"] = json!(d);
                    }
                    v
                })
                .collect(),
        )
    }

    /// Checks the shape of every member value the edit names, before any call.
    pub(super) fn check_member_values(&self, edit: &MemberEdit) -> Result<(), ScimError> {
        let spec = self.members_spec()?;
        super::limits::check_members(&self.gateway.config.limits, edit.values().count())?;
        // Integer ids must also fit the 64-bit integer a `{member.value:int}` body renders,
        // or the member call itself fails and a bad value becomes a 502.
        let fits = |v: &str| spec.member_id != IdKind::Integer || v.parse::<i64>().is_ok();
        let bad: Vec<String> = edit
            .values()
            .filter(|v| !id_is_plausible(spec.member_id, v) || !fits(v))
            .map(|v| v.chars().filter(|c| !c.is_control()).take(64).collect())
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(ScimError::bad_request(
                ScimType::InvalidValue,
                format!("these members name no {}: {}", spec.member_type, list(&bad)),
            ))
        }
    }

    /// Applies a member edit to group `id`.
    pub(super) async fn apply_member_edit(
        &self,
        id: &str,
        edit: MemberEdit,
    ) -> Result<(), ScimError> {
        if !edit.touched {
            return Ok(());
        }
        let spec = self.members_spec()?.clone();
        self.check_member_values(&edit)?;
        if let Some(embedded) = &spec.embedded {
            return self.apply_embedded(&spec, embedded, id, &edit).await;
        }
        let (adds, removes) = match edit.target {
            Some(target) => {
                if let Some(replace) = &spec.replace {
                    let values: Vec<String> = target.into_iter().collect();
                    let vars = Vars {
                        id: Some(id),
                        tenant: Some(&self.tenant),
                        members: Some(&values),
                        ..Vars::default()
                    };
                    let body = match &replace.body {
                        Some(b) => Some(b.render(&vars).map_err(|e| {
                            ScimError::bad_request(ScimType::InvalidValue, e.to_string())
                        })?),
                        None => None,
                    };
                    let response = self.send(replace, Some(id), &[], body.as_ref()).await?;
                    if spec
                        .unknown_member
                        .as_ref()
                        .is_some_and(|u| u.matches(response.status, &response.body))
                    {
                        return Err(ScimError::bad_request(ScimType::InvalidValue, "some members name nobody the upstream knows; the membership was not changed"));
                    }
                    if self.is_error(&response) {
                        return Err(self.upstream_error(&response, Some(id)));
                    }
                    return Ok(());
                }
                let current: BTreeSet<String> = self
                    .read_members(id)
                    .await?
                    .into_iter()
                    .map(|m| m.value)
                    .collect();
                let adds = target.difference(&current).cloned().collect();
                let removes = current.difference(&target).cloned().collect();
                (adds, removes)
            }
            None => {
                let mut adds = Vec::new();
                let mut removes = Vec::new();
                for (value, change) in edit.changes {
                    match change {
                        Change::Add => adds.push(value),
                        Change::Remove => removes.push(value),
                    }
                }
                (adds, removes)
            }
        };
        if !adds.is_empty() && spec.unknown_members == UnknownMembers::RejectBatch {
            self.reject_unknown_members(&spec, &adds).await?;
        }
        let mut calls: Vec<(String, Change)> = adds.into_iter().map(|v| (v, Change::Add)).collect();
        calls.extend(removes.into_iter().map(|v| (v, Change::Remove)));
        if calls.is_empty() {
            return Ok(());
        }
        super::observe::record_fan_out(calls.len());
        let deadline = tokio::time::Instant::now() + spec.deadline;
        let outcomes = self.fan_out(&spec, id, &calls, deadline).await?;
        self.settle(&spec, id, &calls, outcomes, deadline).await
    }

    /// `reject_batch`: every new member is looked up first; unknown ones fail the request
    /// before any member call.
    async fn reject_unknown_members(
        &self,
        spec: &Members,
        adds: &[String],
    ) -> Result<(), ScimError> {
        let member_resource = self
            .mapping
            .resource(&spec.member_endpoint)
            .cloned()
            .ok_or_else(|| ScimError::bad_gateway("the member resource type is not mapped"))?;
        let get = member_resource
            .ops
            .get
            .clone()
            .ok_or_else(|| ScimError::bad_gateway("the member resource type cannot be read"))?;
        let lookups = stream::iter(adds.iter().cloned())
            .map(|value| {
                let get = &get;
                async move {
                    let response = self.send(get, Some(&value), &[], None).await;
                    (value, response)
                }
            })
            .buffer_unordered(spec.concurrency)
            .collect::<Vec<_>>()
            .await;
        let mut unknown = Vec::new();
        for (value, response) in lookups {
            let response = response?;
            if response.status == StatusCode::NOT_FOUND {
                unknown.push(value);
            } else if !response.status.is_success() {
                return Err(self.upstream_error(&response, None));
            }
        }
        if unknown.is_empty() {
            return Ok(());
        }
        unknown.sort();
        Err(ScimError::bad_request(
            ScimType::InvalidValue,
            format!("unknown members (no call was made): {}", list(&unknown)),
        ))
    }

    /// One call per member, at most `concurrency` in flight, until the deadline.
    async fn fan_out(
        &self,
        spec: &Members,
        id: &str,
        calls: &[(String, Change)],
        deadline: tokio::time::Instant,
    ) -> Result<Vec<Outcome>, ScimError> {
        let add = spec.add.as_ref();
        let remove = spec.remove.as_ref();
        if calls.iter().any(|(_, c)| *c == Change::Add) && add.is_none() {
            return Err(ScimError::bad_request(
                ScimType::Mutability,
                "this mapping cannot add members one by one",
            ));
        }
        if calls.iter().any(|(_, c)| *c == Change::Remove) && remove.is_none() {
            return Err(ScimError::bad_request(
                ScimType::Mutability,
                "this mapping cannot remove members one by one",
            ));
        }
        let states: Arc<Vec<AtomicU8>> =
            Arc::new(calls.iter().map(|_| AtomicU8::new(NOT_STARTED)).collect());
        let mut outcomes: Vec<Option<Outcome>> = vec![None; calls.len()];
        // Owned items: a stream whose items borrow would not be `Send` for every lifetime.
        let work: Vec<(usize, String, Change)> = calls
            .iter()
            .enumerate()
            .map(|(i, (value, change))| (i, value.clone(), *change))
            .collect();
        let mut running = stream::iter(work)
            .map(|(i, value, change)| {
                let states = states.clone();
                async move {
                    states[i].store(IN_FLIGHT, Ordering::Relaxed);
                    let call = match change {
                        Change::Add => add,
                        Change::Remove => remove,
                    };
                    let outcome = match call {
                        Some(call) => self.member_call(spec, call, id, &value).await,
                        None => Outcome::Failed("no call".into()),
                    };
                    (i, outcome)
                }
            })
            .buffer_unordered(spec.concurrency);
        loop {
            match tokio::time::timeout_at(deadline, running.next()).await {
                Ok(Some((i, outcome))) => outcomes[i] = Some(outcome),
                Ok(None) => break,
                Err(_) => break,
            }
        }
        Ok(outcomes
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                o.unwrap_or_else(|| match states[i].load(Ordering::Relaxed) {
                    IN_FLIGHT => Outcome::TimedOut,
                    _ => Outcome::NotSent,
                })
            })
            .collect())
    }

    async fn member_call(
        &self,
        spec: &Members,
        call: &MemberCall,
        id: &str,
        value: &str,
    ) -> Outcome {
        let vars = Vars {
            id: Some(id),
            tenant: Some(&self.tenant),
            member: Some(value),
            ..Vars::default()
        };
        let body = match &call.call.body {
            Some(b) => match b.render(&vars) {
                Ok(v) => Some(v),
                Err(e) => return Outcome::Failed(e.to_string()),
            },
            None => None,
        };
        let audit: Vec<_> = self.audit_header().into_iter().collect();
        match self
            .gateway
            .upstream
            .send(&call.call, &vars, &[], body.as_ref(), &audit)
            .await
        {
            Ok(r) if call.already_done.contains(&r.status) => Outcome::AlreadyDone,
            Ok(r)
                if spec
                    .unknown_member
                    .as_ref()
                    .is_some_and(|u| u.matches(r.status, &r.body)) =>
            {
                Outcome::UnknownMember
            }
            Ok(r) if r.status.is_success() => Outcome::Changed,
            Ok(r) => Outcome::Failed(format!("upstream {}", r.status.as_u16())),
            Err(UpstreamError::Timeout) => Outcome::TimedOut,
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    /// Turns outcomes into the answer: success, 400 for unknown members, or a report of
    /// what happened to every member after re-reading the membership.
    async fn settle(
        &self,
        spec: &Members,
        id: &str,
        calls: &[(String, Change)],
        outcomes: Vec<Outcome>,
        deadline: tokio::time::Instant,
    ) -> Result<(), ScimError> {
        let failed = outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Failed(_) | Outcome::TimedOut | Outcome::NotSent));
        let unknown: Vec<String> = calls
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| **o == Outcome::UnknownMember)
            .map(|((v, _), _)| v.clone())
            .collect();
        if !failed {
            if unknown.is_empty() {
                return Ok(());
            }
            return Err(ScimError::bad_request(
                ScimType::InvalidValue,
                format!(
                    "unknown members, not added (the other changes were applied): {}",
                    list(&unknown)
                ),
            ));
        }
        let mut compensated = BTreeMap::new();
        if spec.on_partial_failure == PartialFailure::Compensate {
            // Undo exactly the calls that changed state; `already_done` ones changed nothing.
            let undo: Vec<(String, Change)> = calls
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| **o == Outcome::Changed)
                .map(|((v, c), _)| {
                    (
                        v.clone(),
                        match c {
                            Change::Add => Change::Remove,
                            Change::Remove => Change::Add,
                        },
                    )
                })
                .collect();
            // Undoing gets its own budget: leaving half-applied state behind is worse than a late answer.
            let undo_deadline =
                tokio::time::Instant::now() + spec.deadline.max(std::time::Duration::from_secs(1));
            let undone = self.fan_out(spec, id, &undo, undo_deadline).await?;
            for ((value, _), outcome) in undo.iter().zip(undone) {
                compensated.insert(value.clone(), outcome);
            }
        }
        let _ = deadline;
        let present: Option<BTreeSet<String>> = self
            .read_members(id)
            .await
            .ok()
            .map(|m| m.into_iter().map(|m| m.value).collect());
        let mut lines = Vec::new();
        let (mut applied, mut not_applied, mut unsure) = (0, 0, 0);
        for ((value, change), outcome) in calls.iter().zip(&outcomes) {
            let verb = match change {
                Change::Add => "add",
                Change::Remove => "remove",
            };
            let observed = present
                .as_ref()
                .map(|p| p.contains(value) == (*change == Change::Add));
            let why = match outcome {
                Outcome::Changed => "succeeded".to_owned(),
                Outcome::AlreadyDone => "was already so".to_owned(),
                Outcome::UnknownMember => "unknown member".to_owned(),
                Outcome::Failed(e) => format!("failed: {e}"),
                Outcome::TimedOut => "timed out".to_owned(),
                Outcome::NotSent => "not sent before the deadline".to_owned(),
            };
            let undo = compensated.get(value).map(|o| match o {
                Outcome::Changed | Outcome::AlreadyDone => ", undone",
                _ => ", undo failed",
            });
            let state = match (observed, outcome) {
                (Some(true), _) => {
                    applied += 1;
                    "applied"
                }
                (Some(false), Outcome::TimedOut) => {
                    unsure += 1;
                    "unknown (may still land)"
                }
                (Some(false), _) => {
                    not_applied += 1;
                    "not applied"
                }
                (None, _) => {
                    unsure += 1;
                    "unknown (membership could not be re-read)"
                }
            };
            lines.push(format!(
                "{verb} {value}: {state} ({why}{})",
                undo.unwrap_or("")
            ));
        }
        let timed_out = outcomes
            .iter()
            .any(|o| matches!(o, Outcome::TimedOut | Outcome::NotSent));
        let status = if timed_out {
            StatusCode::GATEWAY_TIMEOUT
        } else {
            StatusCode::BAD_GATEWAY
        };
        let policy = match spec.on_partial_failure {
            PartialFailure::Report => "changes that succeeded were kept; retrying is safe",
            PartialFailure::Compensate => "changes that succeeded were undone",
        };
        Err(ScimError::new(
            status,
            format!(
                "member changes partly failed ({policy}): {applied} applied, {not_applied} not applied, {unsure} unknown. {}",
                lines.join("; ")
            ),
        ))
    }
}

/// The member ids in an embedded-model group object.
fn embedded_ids(embedded: &Embedded, obj: &Value) -> Vec<String> {
    embedded
        .ids
        .get(obj)
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(scalar_text).collect())
        .unwrap_or_default()
}
