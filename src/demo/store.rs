//! The demo upstream's data model: companies, users, teams, team memberships and SCIM keys.
//!
//! Everything here is synchronous and free of HTTP so that the business rules of the
//! Blacksmith contract (uniqueness, validation, cascades, paging) can be unit-tested on
//! their own. Operations take the request's JSON object (already unwrapped from its
//! `{"user": ...}` envelope) and return the JSON the API answers with, or a typed
//! [`StoreError`] that `routes.rs` turns into the contract's error bodies.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Validation messages per field, as in `{"errors": {"email": ["is invalid"]}}`.
///
/// A `BTreeMap` keeps the output order stable, which makes responses and tests deterministic.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// Why a store operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The company in the path does not exist.
    #[error("company {0} not found")]
    CompanyNotFound(i64),
    /// The user in the path does not exist in this company.
    #[error("user {0} not found")]
    UserNotFound(i64),
    /// The team in the path does not exist in this company.
    #[error("team {0} not found")]
    TeamNotFound(i64),
    /// `DELETE /teams/{id}/members/{user_id}` for a user that is not a member.
    #[error("user {user_id} is not a member of team {team_id}")]
    NotAMember {
        /// The team in the path.
        team_id: i64,
        /// The user that is not a member.
        user_id: i64,
    },
    /// A user named in a membership body does not exist (answered as `user_not_found`,
    /// distinct from `not_found`, so the gateway can tell "bad member" from "bad group").
    #[error("user(s) not found: {0:?}")]
    MemberUserNotFound(Vec<i64>),
    /// Validation or uniqueness failure (HTTP 422).
    #[error("validation failed: {0:?}")]
    Invalid(FieldErrors),
}

impl StoreError {
    /// A single-field validation error.
    pub fn invalid(field: &str, message: &str) -> Self {
        let mut errors = FieldErrors::new();
        push_error(&mut errors, field, message);
        StoreError::Invalid(errors)
    }
}

fn push_error(errors: &mut FieldErrors, field: &str, message: &str) {
    errors
        .entry(field.to_owned())
        .or_default()
        .push(message.to_owned());
}

const BLANK: &str = "can't be blank";
const INVALID: &str = "is invalid";
const TAKEN: &str = "has already been taken";
const NOT_IN_LIST: &str = "is not included in the list";

/// Current time, truncated to whole seconds so that every timestamp renders as
/// `2026-01-02T03:04:05Z`, the shape the contract shows.
fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

fn rfc3339(t: OffsetDateTime) -> String {
    // Formatting a UTC OffsetDateTime as RFC 3339 cannot fail for years 0..=9999.
    t.format(&Rfc3339).unwrap_or_default()
}

/// A user's `role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `"member"`, the default.
    Member,
    /// `"admin"`.
    Admin,
}

impl Role {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }
}

/// A user's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `"active"`, the default.
    Active,
    /// `"deactivated"`: still listed, still a team member, just cannot sign in.
    Deactivated,
}

impl Status {
    /// Parses the wire value; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Status::Active),
            "deactivated" => Some(Status::Deactivated),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Deactivated => "deactivated",
        }
    }
}

#[derive(Debug, Clone)]
struct User {
    id: i64,
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
    display_name: Option<String>,
    title: Option<String>,
    department: Option<String>,
    phone: Option<String>,
    role: Role,
    status: Status,
    external_id: Option<String>,
    manager_id: Option<i64>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl User {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "display_name": self.display_name,
            "title": self.title,
            "department": self.department,
            "phone": self.phone,
            "role": self.role.as_str(),
            "status": self.status.as_str(),
            "external_id": self.external_id,
            "manager_id": self.manager_id,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        })
    }
}

#[derive(Debug, Clone)]
struct Team {
    id: i64,
    name: String,
    description: Option<String>,
    // A set ordered by user id: the members listing is "ordered by user_id" for free.
    members: BTreeSet<i64>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl Team {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "member_count": self.members.len(),
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        })
    }
}

/// One tenant. Users and teams live inside their company, which is what makes another
/// company's ids invisible (404) rather than merely forbidden.
#[derive(Debug, Clone, Default)]
pub struct Company {
    /// The company id used in `/api/v1/companies/{company_id}/…`.
    pub id: i64,
    users: BTreeMap<i64, User>,
    teams: BTreeMap<i64, Team>,
}

impl Company {
    fn email_taken(&self, email: &str, except: Option<i64>) -> bool {
        let wanted = email.to_lowercase();
        self.users
            .values()
            .any(|u| Some(u.id) != except && u.email.to_lowercase() == wanted)
    }

    fn team_name_taken(&self, name: &str, except: Option<i64>) -> bool {
        self.teams
            .values()
            .any(|t| Some(t.id) != except && t.name == name)
    }

    fn member_json(&self, user_id: i64) -> Value {
        let email = self.users.get(&user_id).map(|u| u.email.as_str());
        json!({"user_id": user_id, "email": email})
    }
}

#[derive(Debug, Clone)]
struct ScimKey {
    company_id: i64,
    key_id: String,
    purpose: String,
}

/// A requested page of a list: `page` is 1-based, `per_page` already clamped to 1..=100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// 1-based page number.
    pub page: usize,
    /// Items per page, 1..=[`Page::MAX_PER_PAGE`].
    pub per_page: usize,
}

impl Page {
    /// The contract's ceiling; larger requests are clamped rather than refused, as many
    /// Rails apps do, so a gateway asking for SCIM `count=500` still gets a page.
    pub const MAX_PER_PAGE: usize = 100;
    /// Used when `per_page` is absent (the contract's example meta shows 50).
    pub const DEFAULT_PER_PAGE: usize = 50;

    /// Parses the raw `page` / `per_page` query values. Absent or empty means default;
    /// anything that is not a positive integer is a 422 on that parameter.
    pub fn parse(page: Option<&str>, per_page: Option<&str>) -> Result<Page, StoreError> {
        let mut errors = FieldErrors::new();
        let mut number = |field: &str, raw: Option<&str>, default: usize| -> usize {
            let raw = match raw {
                None | Some("") => return default,
                Some(raw) => raw,
            };
            match raw.parse::<u64>() {
                Ok(0) => {
                    push_error(&mut errors, field, "must be greater than 0");
                    default
                }
                // Anything beyond usize is clamped: such a page is simply empty.
                Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
                Err(_) => {
                    // "-1" is a number, just not a valid one; say so precisely.
                    let msg = if raw.parse::<i64>().is_ok() {
                        "must be greater than 0"
                    } else {
                        "is not a number"
                    };
                    push_error(&mut errors, field, msg);
                    default
                }
            }
        };
        let page_no = number("page", page, 1);
        let per_page = number("per_page", per_page, Self::DEFAULT_PER_PAGE);
        if !errors.is_empty() {
            return Err(StoreError::Invalid(errors));
        }
        Ok(Page {
            page: page_no,
            per_page: per_page.min(Self::MAX_PER_PAGE),
        })
    }

    /// Cuts one page out of an already filtered and ordered sequence; returns it with the
    /// total count before paging.
    pub fn apply<T>(self, items: impl Iterator<Item = T>) -> (Vec<T>, usize) {
        let all: Vec<T> = items.collect();
        let total = all.len();
        let skip = (self.page - 1).saturating_mul(self.per_page);
        let page = all.into_iter().skip(skip).take(self.per_page).collect();
        (page, total)
    }
}

impl Default for Page {
    fn default() -> Self {
        Page {
            page: 1,
            per_page: Self::DEFAULT_PER_PAGE,
        }
    }
}

/// Exact-match filters of `GET /users`. `None` means "do not filter".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilter {
    /// Matched case-insensitively, like the uniqueness rule.
    pub email: Option<String>,
    /// Matched exactly.
    pub external_id: Option<String>,
    /// Matched exactly.
    pub status: Option<Status>,
}

/// What a request body says about one field: absent (leave it), `null` (clear it) or a value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change<T> {
    Keep,
    Clear,
    Set(T),
}

impl<T> Change<T> {
    /// Applies to an optional field; returns whether the value changed.
    fn apply_opt(self, target: &mut Option<T>) -> bool
    where
        T: PartialEq,
    {
        let new = match self {
            Change::Keep => return false,
            Change::Clear => None,
            Change::Set(v) => Some(v),
        };
        if *target == new {
            return false;
        }
        *target = new;
        true
    }
}

fn string_change(obj: &Map<String, Value>, key: &str, errors: &mut FieldErrors) -> Change<String> {
    match obj.get(key) {
        None => Change::Keep,
        Some(Value::Null) => Change::Clear,
        Some(Value::String(s)) => Change::Set(s.clone()),
        Some(_) => {
            push_error(errors, key, INVALID);
            Change::Keep
        }
    }
}

/// Ids must be JSON integers: the demo is deliberately strict so that a mapping which
/// forgets to turn SCIM's string ids back into integers fails loudly in tests.
fn id_change(obj: &Map<String, Value>, key: &str, errors: &mut FieldErrors) -> Change<i64> {
    match obj.get(key) {
        None => Change::Keep,
        Some(Value::Null) => Change::Clear,
        Some(Value::Number(n)) if n.as_i64().is_some() => Change::Set(n.as_i64().unwrap_or(0)),
        Some(_) => {
            push_error(errors, key, INVALID);
            Change::Keep
        }
    }
}

fn enum_change<T>(
    obj: &Map<String, Value>,
    key: &str,
    parse: fn(&str) -> Option<T>,
    errors: &mut FieldErrors,
) -> Change<T> {
    match obj.get(key) {
        None => Change::Keep,
        Some(Value::Null) => Change::Clear,
        Some(Value::String(s)) => match parse(s) {
            Some(v) => Change::Set(v),
            None => {
                push_error(errors, key, NOT_IN_LIST);
                Change::Keep
            }
        },
        Some(_) => {
            push_error(errors, key, NOT_IN_LIST);
            Change::Keep
        }
    }
}

/// A deliberately loose check (something@something, no spaces): the contract only asks
/// that obviously broken addresses be refused with `errors.email`.
fn email_is_valid(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !domain.is_empty() && !email.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// Every field of a user body, parsed once. Unknown keys are ignored, as the contract says.
struct UserChanges {
    email: Change<String>,
    first_name: Change<String>,
    last_name: Change<String>,
    display_name: Change<String>,
    title: Change<String>,
    department: Change<String>,
    phone: Change<String>,
    role: Change<Role>,
    status: Change<Status>,
    external_id: Change<String>,
    manager_id: Change<i64>,
}

impl UserChanges {
    fn parse(obj: &Map<String, Value>, errors: &mut FieldErrors) -> Self {
        UserChanges {
            email: string_change(obj, "email", errors),
            first_name: string_change(obj, "first_name", errors),
            last_name: string_change(obj, "last_name", errors),
            display_name: string_change(obj, "display_name", errors),
            title: string_change(obj, "title", errors),
            department: string_change(obj, "department", errors),
            phone: string_change(obj, "phone", errors),
            role: enum_change(obj, "role", Role::parse, errors),
            status: enum_change(obj, "status", Status::parse, errors),
            external_id: string_change(obj, "external_id", errors),
            manager_id: id_change(obj, "manager_id", errors),
        }
    }

    /// Checks the rules shared by create and update. `id` is the user being updated
    /// (`None` on create), used to exclude itself from uniqueness and manager checks.
    fn validate(&self, company: &Company, id: Option<i64>, errors: &mut FieldErrors) {
        match &self.email {
            Change::Keep if id.is_some() => {}
            // A wrongly typed email already has its "is invalid"; don't add "blank" too.
            Change::Keep if errors.contains_key("email") => {}
            Change::Keep | Change::Clear => push_error(errors, "email", BLANK),
            Change::Set(e) if e.trim().is_empty() => push_error(errors, "email", BLANK),
            Change::Set(e) if !email_is_valid(e) => push_error(errors, "email", INVALID),
            Change::Set(e) if company.email_taken(e, id) => push_error(errors, "email", TAKEN),
            Change::Set(_) => {}
        }
        if self.role == Change::Clear {
            push_error(errors, "role", NOT_IN_LIST);
        }
        if let Change::Set(m) = self.manager_id {
            if Some(m) == id {
                push_error(errors, "manager_id", "can't be the user itself");
            } else if !company.users.contains_key(&m) {
                push_error(errors, "manager_id", "does not exist");
            }
        }
    }

    /// Applies every optional-field change; returns whether anything changed.
    fn apply(self, user: &mut User) -> bool {
        let mut changed = false;
        if let Change::Set(email) = self.email {
            if user.email != email {
                user.email = email;
                changed = true;
            }
        }
        if let Change::Set(role) = self.role {
            changed |= user.role != role;
            user.role = role;
        }
        if let Change::Set(status) = self.status {
            changed |= user.status != status;
            user.status = status;
        }
        changed |= self.first_name.apply_opt(&mut user.first_name);
        changed |= self.last_name.apply_opt(&mut user.last_name);
        changed |= self.display_name.apply_opt(&mut user.display_name);
        changed |= self.title.apply_opt(&mut user.title);
        changed |= self.department.apply_opt(&mut user.department);
        changed |= self.phone.apply_opt(&mut user.phone);
        changed |= self.external_id.apply_opt(&mut user.external_id);
        changed |= self.manager_id.apply_opt(&mut user.manager_id);
        changed
    }
}

/// The whole demo database. Ids come from one counter per kind for the whole store (not
/// per company), like database sequences, so ids never collide across tenants and a
/// company-isolation test can probe another company's real ids.
#[derive(Debug)]
pub struct Store {
    companies: BTreeMap<i64, Company>,
    next_user_id: i64,
    next_team_id: i64,
    keys: HashMap<String, ScimKey>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            companies: BTreeMap::new(),
            // Four-digit user ids (like the contract's 1042) make user and team ids easy to
            // tell apart in logs and assertions.
            next_user_id: 1001,
            next_team_id: 1,
            keys: HashMap::new(),
        }
    }
}

impl Store {
    /// Creates the company if it does not exist yet.
    pub fn ensure_company(&mut self, company_id: i64) {
        self.companies.entry(company_id).or_insert_with(|| Company {
            id: company_id,
            ..Company::default()
        });
    }

    fn company(&self, company_id: i64) -> Result<&Company, StoreError> {
        self.companies
            .get(&company_id)
            .ok_or(StoreError::CompanyNotFound(company_id))
    }

    fn company_mut(&mut self, company_id: i64) -> Result<&mut Company, StoreError> {
        self.companies
            .get_mut(&company_id)
            .ok_or(StoreError::CompanyNotFound(company_id))
    }

    // ---- SCIM keys -----------------------------------------------------------------

    /// Registers (or replaces) a SCIM key; creates its company.
    pub fn add_scim_key(&mut self, token: &str, company_id: i64, key_id: &str, purpose: &str) {
        self.ensure_company(company_id);
        self.keys.insert(
            token.to_owned(),
            ScimKey {
                company_id,
                key_id: key_id.to_owned(),
                purpose: purpose.to_owned(),
            },
        );
    }

    /// Revokes a SCIM key; returns whether it existed.
    pub fn remove_scim_key(&mut self, token: &str) -> bool {
        self.keys.remove(token).is_some()
    }

    /// The introspection answer for `token`, RFC 7662 style: unknown keys are simply
    /// `{"active": false}` with no further detail.
    pub fn introspect(&self, token: &str) -> Value {
        match self.keys.get(token) {
            Some(k) => json!({
                "active": true,
                "company_id": k.company_id,
                "key_id": k.key_id,
                "purpose": k.purpose,
            }),
            None => json!({"active": false}),
        }
    }

    // ---- users ---------------------------------------------------------------------

    /// `GET /users/{id}`.
    pub fn get_user(&self, company_id: i64, id: i64) -> Result<Value, StoreError> {
        let company = self.company(company_id)?;
        company
            .users
            .get(&id)
            .map(User::to_json)
            .ok_or(StoreError::UserNotFound(id))
    }

    /// `GET /users`: filtered, ordered by id, paged. Returns the page and the total.
    pub fn list_users(
        &self,
        company_id: i64,
        filter: &UserFilter,
        page: Page,
    ) -> Result<(Vec<Value>, usize), StoreError> {
        let company = self.company(company_id)?;
        let email = filter.email.as_ref().map(|e| e.to_lowercase());
        let matching = company.users.values().filter(|u| {
            email.as_ref().is_none_or(|e| u.email.to_lowercase() == *e)
                && filter
                    .external_id
                    .as_ref()
                    .is_none_or(|x| u.external_id.as_ref() == Some(x))
                && filter.status.is_none_or(|s| u.status == s)
        });
        let (users, total) = page.apply(matching);
        Ok((users.into_iter().map(User::to_json).collect(), total))
    }

    /// `POST /users`. `status` may be given on create (default `active`); `role` defaults
    /// to `member`.
    pub fn create_user(
        &mut self,
        company_id: i64,
        attrs: &Map<String, Value>,
    ) -> Result<Value, StoreError> {
        let id = self.next_user_id;
        let company = self.company_mut(company_id)?;
        let mut errors = FieldErrors::new();
        let changes = UserChanges::parse(attrs, &mut errors);
        changes.validate(company, None, &mut errors);
        if changes.status == Change::Clear {
            push_error(&mut errors, "status", NOT_IN_LIST);
        }
        if !errors.is_empty() {
            return Err(StoreError::Invalid(errors));
        }
        let t = now();
        let mut user = User {
            id,
            email: String::new(),
            first_name: None,
            last_name: None,
            display_name: None,
            title: None,
            department: None,
            phone: None,
            role: Role::Member,
            status: Status::Active,
            external_id: None,
            manager_id: None,
            created_at: t,
            updated_at: t,
        };
        changes.apply(&mut user);
        let out = user.to_json();
        company.users.insert(id, user);
        self.next_user_id += 1;
        Ok(out)
    }

    /// `PATCH /users/{id}`: partial update, `null` clears. `status` may be repeated with
    /// its current value (a full-object PATCH is harmless) but changing it is a 422: that is
    /// what `/deactivate` and `/reactivate` are for.
    pub fn update_user(
        &mut self,
        company_id: i64,
        id: i64,
        attrs: &Map<String, Value>,
    ) -> Result<Value, StoreError> {
        let company = self.company_mut(company_id)?;
        let current_status = company
            .users
            .get(&id)
            .ok_or(StoreError::UserNotFound(id))?
            .status;
        let mut errors = FieldErrors::new();
        let changes = UserChanges::parse(attrs, &mut errors);
        changes.validate(company, Some(id), &mut errors);
        match changes.status {
            Change::Keep => {}
            Change::Set(s) if s == current_status => {}
            _ => push_error(
                &mut errors,
                "status",
                "cannot be changed here; use /deactivate or /reactivate",
            ),
        }
        if !errors.is_empty() {
            return Err(StoreError::Invalid(errors));
        }
        let user = company
            .users
            .get_mut(&id)
            .ok_or(StoreError::UserNotFound(id))?;
        if changes.apply(user) {
            user.updated_at = now();
        }
        Ok(user.to_json())
    }

    /// `POST /users/{id}/deactivate` and `/reactivate`. Idempotent: setting the status it
    /// already has changes nothing (not even `updated_at`).
    pub fn set_user_status(
        &mut self,
        company_id: i64,
        id: i64,
        status: Status,
    ) -> Result<Value, StoreError> {
        let user = self
            .company_mut(company_id)?
            .users
            .get_mut(&id)
            .ok_or(StoreError::UserNotFound(id))?;
        if user.status != status {
            user.status = status;
            user.updated_at = now();
        }
        Ok(user.to_json())
    }

    /// `DELETE /users/{id}`: hard delete. Like foreign keys with `ON DELETE`, it also drops
    /// the user's team memberships and clears `manager_id` on its reports.
    pub fn delete_user(&mut self, company_id: i64, id: i64) -> Result<(), StoreError> {
        let company = self.company_mut(company_id)?;
        company
            .users
            .remove(&id)
            .ok_or(StoreError::UserNotFound(id))?;
        let t = now();
        for team in company.teams.values_mut() {
            if team.members.remove(&id) {
                team.updated_at = t;
            }
        }
        for user in company.users.values_mut() {
            if user.manager_id == Some(id) {
                user.manager_id = None;
                user.updated_at = t;
            }
        }
        Ok(())
    }

    /// Every user of a company in id order (for test assertions); empty if unknown.
    pub fn all_users(&self, company_id: i64) -> Vec<Value> {
        self.companies
            .get(&company_id)
            .map(|c| c.users.values().map(User::to_json).collect())
            .unwrap_or_default()
    }

    // ---- teams ---------------------------------------------------------------------

    /// `GET /teams/{id}`.
    pub fn get_team(&self, company_id: i64, id: i64) -> Result<Value, StoreError> {
        self.company(company_id)?
            .teams
            .get(&id)
            .map(Team::to_json)
            .ok_or(StoreError::TeamNotFound(id))
    }

    /// `GET /teams`, with the exact-match `name` filter.
    pub fn list_teams(
        &self,
        company_id: i64,
        name: Option<&str>,
        page: Page,
    ) -> Result<(Vec<Value>, usize), StoreError> {
        let company = self.company(company_id)?;
        let matching = company
            .teams
            .values()
            .filter(|t| name.is_none_or(|n| t.name == n));
        let (teams, total) = page.apply(matching);
        Ok((teams.into_iter().map(Team::to_json).collect(), total))
    }

    fn team_changes(
        company: &Company,
        attrs: &Map<String, Value>,
        id: Option<i64>,
    ) -> Result<(Change<String>, Change<String>), StoreError> {
        let mut errors = FieldErrors::new();
        let name = string_change(attrs, "name", &mut errors);
        let description = string_change(attrs, "description", &mut errors);
        match &name {
            Change::Keep if id.is_some() || errors.contains_key("name") => {}
            Change::Keep | Change::Clear => push_error(&mut errors, "name", BLANK),
            Change::Set(n) if n.trim().is_empty() => push_error(&mut errors, "name", BLANK),
            // Exact (case-sensitive) comparison, consistent with the exact-match filter.
            Change::Set(n) if company.team_name_taken(n, id) => {
                push_error(&mut errors, "name", TAKEN)
            }
            Change::Set(_) => {}
        }
        if errors.is_empty() {
            Ok((name, description))
        } else {
            Err(StoreError::Invalid(errors))
        }
    }

    /// `POST /teams`: `name` required and unique per company.
    pub fn create_team(
        &mut self,
        company_id: i64,
        attrs: &Map<String, Value>,
    ) -> Result<Value, StoreError> {
        let id = self.next_team_id;
        let company = self.company_mut(company_id)?;
        let (name, description) = Self::team_changes(company, attrs, None)?;
        let t = now();
        let mut team = Team {
            id,
            name: String::new(),
            description: None,
            members: BTreeSet::new(),
            created_at: t,
            updated_at: t,
        };
        if let Change::Set(n) = name {
            team.name = n;
        }
        description.apply_opt(&mut team.description);
        let out = team.to_json();
        company.teams.insert(id, team);
        self.next_team_id += 1;
        Ok(out)
    }

    /// `PATCH /teams/{id}`.
    pub fn update_team(
        &mut self,
        company_id: i64,
        id: i64,
        attrs: &Map<String, Value>,
    ) -> Result<Value, StoreError> {
        let company = self.company_mut(company_id)?;
        if !company.teams.contains_key(&id) {
            return Err(StoreError::TeamNotFound(id));
        }
        let (name, description) = Self::team_changes(company, attrs, Some(id))?;
        let team = company
            .teams
            .get_mut(&id)
            .ok_or(StoreError::TeamNotFound(id))?;
        let mut changed = false;
        if let Change::Set(n) = name {
            changed |= team.name != n;
            team.name = n;
        }
        changed |= description.apply_opt(&mut team.description);
        if changed {
            team.updated_at = now();
        }
        Ok(team.to_json())
    }

    /// `DELETE /teams/{id}` (memberships go with it).
    pub fn delete_team(&mut self, company_id: i64, id: i64) -> Result<(), StoreError> {
        self.company_mut(company_id)?
            .teams
            .remove(&id)
            .map(|_| ())
            .ok_or(StoreError::TeamNotFound(id))
    }

    // ---- memberships ---------------------------------------------------------------

    /// `GET /teams/{id}/members`: `{"user_id", "email"}` items ordered by user id.
    pub fn list_members(
        &self,
        company_id: i64,
        team_id: i64,
        page: Page,
    ) -> Result<(Vec<Value>, usize), StoreError> {
        let company = self.company(company_id)?;
        let team = company
            .teams
            .get(&team_id)
            .ok_or(StoreError::TeamNotFound(team_id))?;
        let (ids, total) = page.apply(team.members.iter().copied());
        Ok((
            ids.into_iter().map(|id| company.member_json(id)).collect(),
            total,
        ))
    }

    /// `POST /teams/{id}/members`. Returns `(created, member)`: `created` is false when
    /// the user already was a member (the API answers 200 instead of 201 then).
    pub fn add_member(
        &mut self,
        company_id: i64,
        team_id: i64,
        user_id: i64,
    ) -> Result<(bool, Value), StoreError> {
        let company = self.company_mut(company_id)?;
        if !company.teams.contains_key(&team_id) {
            return Err(StoreError::TeamNotFound(team_id));
        }
        if !company.users.contains_key(&user_id) {
            return Err(StoreError::MemberUserNotFound(vec![user_id]));
        }
        let team = company
            .teams
            .get_mut(&team_id)
            .ok_or(StoreError::TeamNotFound(team_id))?;
        let created = team.members.insert(user_id);
        if created {
            team.updated_at = now();
        }
        Ok((created, company.member_json(user_id)))
    }

    /// `DELETE /teams/{id}/members/{user_id}`.
    pub fn remove_member(
        &mut self,
        company_id: i64,
        team_id: i64,
        user_id: i64,
    ) -> Result<(), StoreError> {
        let team = self
            .company_mut(company_id)?
            .teams
            .get_mut(&team_id)
            .ok_or(StoreError::TeamNotFound(team_id))?;
        if !team.members.remove(&user_id) {
            return Err(StoreError::NotAMember { team_id, user_id });
        }
        team.updated_at = now();
        Ok(())
    }

    /// `PUT /teams/{id}/members`: replaces the whole set (duplicates collapse). All ids are
    /// checked first, so an unknown one leaves the team exactly as it was.
    pub fn replace_members(
        &mut self,
        company_id: i64,
        team_id: i64,
        user_ids: &[i64],
    ) -> Result<Vec<Value>, StoreError> {
        let company = self.company_mut(company_id)?;
        if !company.teams.contains_key(&team_id) {
            return Err(StoreError::TeamNotFound(team_id));
        }
        let wanted: BTreeSet<i64> = user_ids.iter().copied().collect();
        let unknown: Vec<i64> = wanted
            .iter()
            .copied()
            .filter(|id| !company.users.contains_key(id))
            .collect();
        if !unknown.is_empty() {
            return Err(StoreError::MemberUserNotFound(unknown));
        }
        let team = company
            .teams
            .get_mut(&team_id)
            .ok_or(StoreError::TeamNotFound(team_id))?;
        if team.members != wanted {
            team.members = wanted;
            team.updated_at = now();
        }
        let members = team.members.clone();
        Ok(members.iter().map(|&id| company.member_json(id)).collect())
    }

    /// Member ids of a team in order (for test assertions); `None` if there is no such team.
    pub fn team_member_ids(&self, company_id: i64, team_id: i64) -> Option<Vec<i64>> {
        let team = self.companies.get(&company_id)?.teams.get(&team_id)?;
        Some(team.members.iter().copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn store_with_company() -> Store {
        let mut s = Store::default();
        s.ensure_company(1);
        s.ensure_company(2);
        s
    }

    fn create(s: &mut Store, company: i64, v: Value) -> i64 {
        s.create_user(company, &obj(v)).unwrap()["id"]
            .as_i64()
            .unwrap()
    }

    fn errors_of(r: Result<Value, StoreError>) -> FieldErrors {
        match r {
            Err(StoreError::Invalid(e)) => e,
            other => panic!("expected validation error, got {other:?}"),
        }
    }

    #[test]
    fn create_user_validation_table() {
        // (body, expected error field and message, or None for success)
        let cases: Vec<(Value, Option<(&str, &str)>)> = vec![
            (json!({"email": "a@example.com"}), None),
            (
                json!({"email": "b@example.com", "role": "admin", "status": "deactivated"}),
                None,
            ),
            (json!({"email": "c@example.com", "shoe_size": 44}), None),
            (json!({}), Some(("email", BLANK))),
            (json!({"email": null}), Some(("email", BLANK))),
            (json!({"email": "  "}), Some(("email", BLANK))),
            (json!({"email": "nobody"}), Some(("email", INVALID))),
            (json!({"email": "x@"}), Some(("email", INVALID))),
            (json!({"email": 7}), Some(("email", INVALID))),
            (json!({"email": "A@Example.COM"}), Some(("email", TAKEN))),
            (
                json!({"email": "d@example.com", "role": "owner"}),
                Some(("role", NOT_IN_LIST)),
            ),
            (
                json!({"email": "d@example.com", "role": null}),
                Some(("role", NOT_IN_LIST)),
            ),
            (
                json!({"email": "d@example.com", "status": "gone"}),
                Some(("status", NOT_IN_LIST)),
            ),
            (
                json!({"email": "d@example.com", "first_name": 1}),
                Some(("first_name", INVALID)),
            ),
            (
                json!({"email": "d@example.com", "manager_id": 999_999}),
                Some(("manager_id", "does not exist")),
            ),
            (
                json!({"email": "d@example.com", "manager_id": "1001"}),
                Some(("manager_id", INVALID)),
            ),
        ];
        let mut s = store_with_company();
        for (body, expected) in cases {
            let result = s.create_user(1, &obj(body.clone()));
            match expected {
                None => assert!(result.is_ok(), "{body}: {result:?}"),
                Some((field, msg)) => {
                    let errs = errors_of(result);
                    assert_eq!(errs.get(field), Some(&vec![msg.to_owned()]), "{body}");
                }
            }
        }
    }

    #[test]
    fn email_is_unique_per_company_only_and_kept_as_written() {
        let mut s = store_with_company();
        let id = create(&mut s, 1, json!({"email": "Ada@Example.com"}));
        assert_eq!(s.get_user(1, id).unwrap()["email"], "Ada@Example.com");
        // Same address in another company is fine.
        create(&mut s, 2, json!({"email": "ada@example.com"}));
        let errs = errors_of(s.create_user(1, &obj(json!({"email": "ADA@example.COM"}))));
        assert_eq!(errs["email"], vec![TAKEN]);
    }

    #[test]
    fn user_defaults_and_shape() {
        let mut s = store_with_company();
        let u = s
            .create_user(1, &obj(json!({"email": "a@example.com"})))
            .unwrap();
        // The contract's fields, whatever order the JSON map keeps them in.
        let mut keys: Vec<&str> = u.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut expected = [
            "id",
            "email",
            "first_name",
            "last_name",
            "display_name",
            "title",
            "department",
            "phone",
            "role",
            "status",
            "external_id",
            "manager_id",
            "created_at",
            "updated_at",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(u["role"], "member");
        assert_eq!(u["status"], "active");
        assert_eq!(u["manager_id"], Value::Null);
        let created = u["created_at"].as_str().unwrap();
        assert!(created.ends_with('Z') && created.len() == 20, "{created}");
        OffsetDateTime::parse(created, &Rfc3339).unwrap();
    }

    #[test]
    fn patch_user_table() {
        let mut s = store_with_company();
        let boss = create(&mut s, 1, json!({"email": "boss@example.com"}));
        let other = create(&mut s, 1, json!({"email": "other@example.com"}));
        let id = create(
            &mut s,
            1,
            json!({"email": "a@example.com", "title": "Engineer", "phone": "1"}),
        );
        // (patch, Ok((field, expected value)) or Err(field with an error))
        type Case<'a> = (Value, Result<(&'a str, Value), &'a str>);
        let cases: Vec<Case> = vec![
            (json!({"title": null}), Ok(("title", Value::Null))),
            (json!({"title": "Lead"}), Ok(("title", json!("Lead")))),
            (json!({"manager_id": boss}), Ok(("manager_id", json!(boss)))),
            (json!({"manager_id": null}), Ok(("manager_id", Value::Null))),
            (
                json!({"email": "A2@example.com"}),
                Ok(("email", json!("A2@example.com"))),
            ),
            // Changing only the case of one's own email is not a conflict.
            (
                json!({"email": "a2@EXAMPLE.com"}),
                Ok(("email", json!("a2@EXAMPLE.com"))),
            ),
            (json!({"status": "active"}), Ok(("status", json!("active")))),
            (json!({"role": "admin"}), Ok(("role", json!("admin")))),
            (json!({"unknown": true}), Ok(("phone", json!("1")))),
            (json!({"status": "deactivated"}), Err("status")),
            (json!({"status": null}), Err("status")),
            (json!({"email": "OTHER@example.com"}), Err("email")),
            (json!({"email": null}), Err("email")),
            (json!({"email": "bad"}), Err("email")),
            (json!({"role": null}), Err("role")),
            (json!({"manager_id": id}), Err("manager_id")),
            (json!({"manager_id": 424_242}), Err("manager_id")),
        ];
        for (patch, expected) in cases {
            let result = s.update_user(1, id, &obj(patch.clone()));
            match expected {
                Ok((field, value)) => assert_eq!(result.unwrap()[field], value, "{patch}"),
                Err(field) => assert!(errors_of(result).contains_key(field), "{patch}"),
            }
        }
        // A rejected patch changed nothing.
        assert_eq!(s.get_user(1, id).unwrap()["status"], "active");
        assert_eq!(s.get_user(1, other).unwrap()["email"], "other@example.com");
        assert_eq!(
            s.update_user(1, 999, &Map::new()),
            Err(StoreError::UserNotFound(999))
        );
    }

    #[test]
    fn status_actions_are_idempotent() {
        let mut s = store_with_company();
        let id = create(&mut s, 1, json!({"email": "a@example.com"}));
        let u = s.set_user_status(1, id, Status::Deactivated).unwrap();
        assert_eq!(u["status"], "deactivated");
        let again = s.set_user_status(1, id, Status::Deactivated).unwrap();
        assert_eq!(u, again);
        let u = s.set_user_status(1, id, Status::Active).unwrap();
        assert_eq!(u["status"], "active");
    }

    #[test]
    fn company_isolation_and_unknown_company() {
        let mut s = store_with_company();
        let id = create(&mut s, 1, json!({"email": "a@example.com"}));
        assert_eq!(s.get_user(2, id), Err(StoreError::UserNotFound(id)));
        assert_eq!(s.delete_user(2, id), Err(StoreError::UserNotFound(id)));
        assert_eq!(s.get_user(3, id), Err(StoreError::CompanyNotFound(3)));
        let team = s.create_team(1, &obj(json!({"name": "Security"}))).unwrap()["id"]
            .as_i64()
            .unwrap();
        assert_eq!(s.get_team(2, team), Err(StoreError::TeamNotFound(team)));
        // A user of company 2 cannot join a team of company 1.
        let stranger = create(&mut s, 2, json!({"email": "b@example.com"}));
        assert_eq!(
            s.add_member(1, team, stranger),
            Err(StoreError::MemberUserNotFound(vec![stranger]))
        );
    }

    #[test]
    fn page_parse_table() {
        let p = |page, per_page| Page { page, per_page };
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Result<Page, &'a str>);
        let cases: Vec<Case> = vec![
            (None, None, Ok(p(1, 50))),
            (Some(""), Some(""), Ok(p(1, 50))),
            (Some("3"), Some("10"), Ok(p(3, 10))),
            (Some("1"), Some("100"), Ok(p(1, 100))),
            (Some("1"), Some("500"), Ok(p(1, 100))),
            (Some("0"), None, Err("page")),
            (Some("-1"), None, Err("page")),
            (Some("x"), None, Err("page")),
            (Some("1.5"), None, Err("page")),
            (None, Some("0"), Err("per_page")),
            (None, Some("ten"), Err("per_page")),
        ];
        for (page, per_page, expected) in cases {
            match (Page::parse(page, per_page), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{page:?} {per_page:?}"),
                (Err(StoreError::Invalid(e)), Err(field)) => {
                    assert!(e.contains_key(field), "{page:?} {per_page:?}: {e:?}")
                }
                (got, want) => panic!("{page:?} {per_page:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn list_users_filters_and_pages() {
        let mut s = store_with_company();
        let mut ids = Vec::new();
        for i in 0..7 {
            ids.push(create(
                &mut s,
                1,
                json!({"email": format!("u{i}@example.com"), "external_id": format!("x{i}")}),
            ));
        }
        s.set_user_status(1, ids[2], Status::Deactivated).unwrap();
        let ids_of =
            |v: Vec<Value>| -> Vec<i64> { v.iter().map(|u| u["id"].as_i64().unwrap()).collect() };
        let page = |page, per_page| Page { page, per_page };

        let (p2, total) = s.list_users(1, &UserFilter::default(), page(2, 3)).unwrap();
        assert_eq!((ids_of(p2), total), (ids[3..6].to_vec(), 7));
        let (p9, total) = s.list_users(1, &UserFilter::default(), page(9, 3)).unwrap();
        assert_eq!((p9.len(), total), (0, 7));

        let cases: Vec<(UserFilter, Vec<i64>)> = vec![
            (
                UserFilter {
                    email: Some("U4@EXAMPLE.com".into()),
                    ..Default::default()
                },
                vec![ids[4]],
            ),
            (
                UserFilter {
                    email: Some("u4@example".into()),
                    ..Default::default()
                },
                vec![],
            ),
            (
                UserFilter {
                    external_id: Some("x5".into()),
                    ..Default::default()
                },
                vec![ids[5]],
            ),
            (
                UserFilter {
                    external_id: Some("X5".into()),
                    ..Default::default()
                },
                vec![],
            ),
            (
                UserFilter {
                    status: Some(Status::Deactivated),
                    ..Default::default()
                },
                vec![ids[2]],
            ),
            (
                UserFilter {
                    status: Some(Status::Active),
                    external_id: Some("x2".into()),
                    ..Default::default()
                },
                vec![],
            ),
        ];
        for (filter, want) in cases {
            let (got, total) = s.list_users(1, &filter, Page::default()).unwrap();
            assert_eq!(total, want.len(), "{filter:?}");
            assert_eq!(ids_of(got), want, "{filter:?}");
        }
    }

    #[test]
    fn teams_crud_and_uniqueness() {
        let mut s = store_with_company();
        let cases: Vec<(Value, Option<(&str, &str)>)> = vec![
            (
                json!({"name": "Security", "description": "Blue team"}),
                None,
            ),
            (json!({"name": "Research"}), None),
            (json!({"name": "Security"}), Some(("name", TAKEN))),
            (json!({}), Some(("name", BLANK))),
            (json!({"name": ""}), Some(("name", BLANK))),
            (json!({"name": 3}), Some(("name", INVALID))),
            (json!({"name": null}), Some(("name", BLANK))),
            (
                json!({"name": "X", "description": []}),
                Some(("description", INVALID)),
            ),
        ];
        for (body, expected) in cases {
            let result = s.create_team(1, &obj(body.clone()));
            match expected {
                None => assert_eq!(result.unwrap()["member_count"], 0, "{body}"),
                Some((field, msg)) => {
                    assert!(errors_of(result)[field].contains(&msg.to_owned()), "{body}")
                }
            }
        }
        // Same name in another company is fine.
        s.create_team(2, &obj(json!({"name": "Security"}))).unwrap();
        let (teams, total) = s.list_teams(1, Some("Security"), Page::default()).unwrap();
        assert_eq!(total, 1);
        let id = teams[0]["id"].as_i64().unwrap();
        assert_eq!(teams[0]["description"], "Blue team");

        let t = s
            .update_team(1, id, &obj(json!({"description": null})))
            .unwrap();
        assert_eq!(
            (t["name"].clone(), t["description"].clone()),
            (json!("Security"), Value::Null)
        );
        let errs = errors_of(s.update_team(1, id, &obj(json!({"name": "Research"}))));
        assert_eq!(errs["name"], vec![TAKEN]);
        // Renaming to its own name is no conflict.
        s.update_team(1, id, &obj(json!({"name": "Security"})))
            .unwrap();
        s.delete_team(1, id).unwrap();
        assert_eq!(s.get_team(1, id), Err(StoreError::TeamNotFound(id)));
        assert_eq!(s.delete_team(1, id), Err(StoreError::TeamNotFound(id)));
    }

    #[test]
    fn memberships() {
        let mut s = store_with_company();
        let a = create(&mut s, 1, json!({"email": "a@example.com"}));
        let b = create(&mut s, 1, json!({"email": "b@example.com"}));
        let c = create(&mut s, 1, json!({"email": "c@example.com"}));
        let team = s.create_team(1, &obj(json!({"name": "T"}))).unwrap()["id"]
            .as_i64()
            .unwrap();

        assert!(s.add_member(1, team, c).unwrap().0);
        let (created, member) = s.add_member(1, team, c).unwrap();
        assert!(!created);
        assert_eq!(member, json!({"user_id": c, "email": "c@example.com"}));
        s.add_member(1, team, a).unwrap();
        assert_eq!(s.team_member_ids(1, team), Some(vec![a, c]));
        assert_eq!(s.get_team(1, team).unwrap()["member_count"], 2);
        assert_eq!(
            s.add_member(1, team, 5),
            Err(StoreError::MemberUserNotFound(vec![5]))
        );
        assert_eq!(s.add_member(1, 77, a), Err(StoreError::TeamNotFound(77)));

        let (page, total) = s
            .list_members(
                1,
                team,
                Page {
                    page: 2,
                    per_page: 1,
                },
            )
            .unwrap();
        assert_eq!(
            (page, total),
            (vec![json!({"user_id": c, "email": "c@example.com"})], 2)
        );

        assert_eq!(
            s.remove_member(1, team, b),
            Err(StoreError::NotAMember {
                team_id: team,
                user_id: b
            })
        );
        s.remove_member(1, team, a).unwrap();
        assert_eq!(s.team_member_ids(1, team), Some(vec![c]));

        // PUT replaces; an unknown id anywhere means no change at all.
        assert_eq!(
            s.replace_members(1, team, &[a, 9, b]),
            Err(StoreError::MemberUserNotFound(vec![9]))
        );
        assert_eq!(s.team_member_ids(1, team), Some(vec![c]));
        let members = s.replace_members(1, team, &[b, a, b]).unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(s.team_member_ids(1, team), Some(vec![a, b]));
        assert_eq!(
            s.replace_members(1, team, &[]).unwrap(),
            Vec::<Value>::new()
        );
        assert_eq!(s.team_member_ids(1, team), Some(vec![]));
    }

    #[test]
    fn deleting_a_user_cascades() {
        let mut s = store_with_company();
        let boss = create(&mut s, 1, json!({"email": "boss@example.com"}));
        let report = create(
            &mut s,
            1,
            json!({"email": "r@example.com", "manager_id": boss}),
        );
        let team = s.create_team(1, &obj(json!({"name": "T"}))).unwrap()["id"]
            .as_i64()
            .unwrap();
        s.replace_members(1, team, &[boss, report]).unwrap();
        s.delete_user(1, boss).unwrap();
        assert_eq!(s.get_user(1, boss), Err(StoreError::UserNotFound(boss)));
        assert_eq!(s.get_user(1, report).unwrap()["manager_id"], Value::Null);
        assert_eq!(s.team_member_ids(1, team), Some(vec![report]));
        assert_eq!(s.delete_user(1, boss), Err(StoreError::UserNotFound(boss)));
    }

    #[test]
    fn ids_come_from_one_counter_per_kind() {
        let mut s = store_with_company();
        let a = create(&mut s, 1, json!({"email": "a@example.com"}));
        let b = create(&mut s, 2, json!({"email": "a@example.com"}));
        // A failed create does not burn an id.
        assert!(s.create_user(1, &obj(json!({"email": "bad"}))).is_err());
        let c = create(&mut s, 1, json!({"email": "c@example.com"}));
        assert_eq!((b, c), (a + 1, a + 2));
        let t1 = s.create_team(1, &obj(json!({"name": "T"}))).unwrap()["id"].clone();
        let t2 = s.create_team(2, &obj(json!({"name": "T"}))).unwrap()["id"].clone();
        assert_eq!(t2.as_i64().unwrap(), t1.as_i64().unwrap() + 1);
    }

    #[test]
    fn introspection() {
        let mut s = Store::default();
        s.add_scim_key("tok", 42, "k_1", "SCIM Provisioning");
        assert_eq!(
            s.introspect("tok"),
            json!({"active": true, "company_id": 42, "key_id": "k_1", "purpose": "SCIM Provisioning"})
        );
        assert_eq!(s.introspect("nope"), json!({"active": false}));
        // Registering a key makes its company exist.
        assert_eq!(
            s.list_users(42, &UserFilter::default(), Page::default())
                .unwrap()
                .1,
            0
        );
        assert!(s.remove_scim_key("tok"));
        assert_eq!(s.introspect("tok"), json!({"active": false}));
    }
}
