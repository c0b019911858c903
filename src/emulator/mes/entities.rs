//! `GET api/v3/entity` and its `/key`, `/filter` and `/name` sub-paths.

use axum::body::Body;
use axum::http::{Response, StatusCode};
use serde_json::{json, Map, Value};

use super::{bad_request, message, no_resource, rows, Call, NO_SUCH_ENTITY};

/// `api/v3/entity`: every entity (Core.Ent.GetAll).
pub(super) fn all(call: &Call<'_>) -> Response<Body> {
    let plant = call.st.mes.committed();
    rows(plant.entities, call.max_rows)
}

/// `api/v3/entity/key?entId=N` (Core.Ent.GetByKey).
pub(super) fn by_key(call: &Call<'_>) -> Response<Body> {
    let Some(raw) = call.param("entId") else {
        return no_resource(call);
    };
    let Ok(ent_id) = raw.trim().parse::<i64>() else {
        return bad_request("The request is invalid: entId must be an integer.");
    };
    match call.st.mes.committed().entity(ent_id) {
        Some(row) => rows(vec![row.clone()], call.max_rows),
        None => message(StatusCode::NOT_FOUND, NO_SUCH_ENTITY),
    }
}

/// `api/v3/entity/filter?...` (Core.Ent.GetByFilter): entities whose
/// columns match every filter. AVEVA's reference names the filters of
/// Core.Ent.GetByFilter per MES version; here a filter names any column,
/// with or without underscores (`entName` or `ent_name`), strings match
/// partially and case-insensitively, booleans as `true/false` or `0/1`.
pub(super) fn filter(call: &Call<'_>) -> Response<Body> {
    let plant = call.st.mes.committed();
    let filters: Vec<(&str, &str)> = call
        .query
        .iter()
        .filter(|(name, _)| !super::is_common_parameter(name))
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let mut matched = Vec::new();
    for entity in plant.entities {
        let mut keep = true;
        for (name, wanted) in &filters {
            match column(&entity, name) {
                // ASP.NET ignores parameters that bind to nothing.
                None => {}
                Some(value) => match matches(value, wanted) {
                    Some(true) => {}
                    Some(false) => keep = false,
                    None => {
                        return bad_request(&format!(
                            "The request is invalid: the value of {name} has the wrong type."
                        ))
                    }
                },
            }
        }
        if keep {
            matched.push(entity);
        }
    }
    rows(matched, call.max_rows)
}

/// `api/v3/entity/name?entName=..&siteName=` (Core.Ent.GetEntID): the ID of
/// the named entity. `siteName` must be in the URL, possibly empty.
pub(super) fn by_name(call: &Call<'_>) -> Response<Body> {
    let (Some(name), Some(site)) = (call.param("entName"), call.param("siteName")) else {
        return no_resource(call);
    };
    let plant = call.st.mes.committed();
    let found = plant.entities.iter().find(|e| {
        let named = e.get("ent_name").and_then(Value::as_str) == Some(name);
        let id = e.get("ent_id").and_then(Value::as_i64);
        let in_site = site.is_empty()
            || id
                .and_then(|id| plant.site_of(id))
                .and_then(|s| s.get("ent_name"))
                .and_then(Value::as_str)
                == Some(site);
        named && in_site
    });
    match found.and_then(|e| e.get("ent_id")) {
        Some(id) => rows(vec![json_row(id)], call.max_rows),
        None => message(StatusCode::NOT_FOUND, NO_SUCH_ENTITY),
    }
}

fn json_row(id: &Value) -> Map<String, Value> {
    match json!({ "ent_id": id }) {
        Value::Object(row) => row,
        _ => Map::new(),
    }
}

fn simplified(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn column<'r>(row: &'r Map<String, Value>, name: &str) -> Option<&'r Value> {
    let wanted = simplified(name);
    row.iter()
        .find(|(column, _)| simplified(column) == wanted)
        .map(|(_, v)| v)
}

/// Whether `value` matches the filter text; `None` when the text cannot be
/// read as the column's type (a 400 at MES).
fn matches(value: &Value, wanted: &str) -> Option<bool> {
    let wanted = wanted.trim();
    match value {
        Value::Bool(b) => match wanted.to_ascii_lowercase().as_str() {
            "true" | "1" => Some(*b),
            "false" | "0" => Some(!*b),
            _ => None,
        },
        Value::Number(n) => {
            let w: f64 = wanted.parse().ok()?;
            Some(n.as_f64() == Some(w))
        }
        Value::String(s) => Some(s.to_lowercase().contains(&wanted.to_lowercase())),
        _ => Some(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_by_type() {
        assert_eq!(matches(&json!(true), "1"), Some(true));
        assert_eq!(matches(&json!(true), "FALSE"), Some(false));
        assert_eq!(matches(&json!(true), "yes"), None);
        assert_eq!(matches(&json!(4), "4"), Some(true));
        assert_eq!(matches(&json!(4), "x"), None);
        assert_eq!(matches(&json!("Bottling line 1"), "LINE"), Some(true));
        assert_eq!(matches(&Value::Null, "x"), Some(false));
        let row = json_row(&json!(3));
        assert!(column(&row, "entId").is_some() && column(&row, "EntName").is_none());
    }
}
