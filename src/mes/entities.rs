//! Entities: `GET api/v3/entity` and its `/key`, `/filter` and `/name`
//! sub-paths (Core.Ent.GetAll, GetByKey, GetByFilter, GetEntID).

use serde::Deserialize;

use super::models::{Entity, Rows};
use super::{query, MesClient};
use crate::error::{Error, ErrorKind, Result};

impl MesClient {
    /// Every entity: `GET api/v3/entity` (honours [`with_max_rows`](Self::with_max_rows)).
    /// An answer without content (204) is no entities.
    pub async fn entities(&self) -> Result<Vec<Entity>> {
        let rows: Rows<Entity> = self.get_json("api/v3/entity").await?;
        Ok(rows.into_vec())
    }

    /// One entity by its ID: `GET api/v3/entity/key?entId=N`. A missing
    /// entity is [`ErrorKind::NotFound`] (MES: 404 "The specified entity
    /// does not exist").
    pub async fn entity_by_key(&self, ent_id: i64) -> Result<Entity> {
        let path = format!(
            "api/v3/entity/key?{}",
            query([("entId", ent_id.to_string())])
        );
        let rows: Rows<Entity> = self.get_json(&path).await?;
        rows.first()
            .ok_or_else(|| no_entity(&format!("with ID {ent_id}")))
    }

    /// The entities matching every filter: `GET api/v3/entity/filter?name=value&...`
    /// (URL parameters are strings; booleans `true`/`false`). The filter
    /// names are those of Core.Ent.GetByFilter in AVEVA's MES Web API V3
    /// reference for your MES version; they are sent as given.
    pub async fn entities_where<I, K, V>(&self, filters: I) -> Result<Vec<Entity>>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let filters = query(filters);
        let path = if filters.is_empty() {
            "api/v3/entity/filter".to_owned()
        } else {
            format!("api/v3/entity/filter?{filters}")
        };
        let rows: Rows<Entity> = self.get_json(&path).await?;
        Ok(rows.into_vec())
    }

    /// The ID of the entity named `ent_name` in site `site_name` (`None`:
    /// any site, for names that are unique): `GET api/v3/entity/name?entName=..&siteName=..`.
    pub async fn entity_id(&self, ent_name: &str, site_name: Option<&str>) -> Result<i64> {
        #[derive(Deserialize)]
        struct Id {
            ent_id: i64,
        }
        let path = format!(
            "api/v3/entity/name?{}",
            query([("entName", ent_name), ("siteName", site_name.unwrap_or(""))])
        );
        let rows: Rows<Id> = self.get_json(&path).await?;
        rows.first()
            .map(|id| id.ent_id)
            .ok_or_else(|| no_entity(&format!("named {ent_name:?}")))
    }
}

/// MES answered with no row.
fn no_entity(which: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("MES has no entity {which} (it answered with no row)"),
    )
}
