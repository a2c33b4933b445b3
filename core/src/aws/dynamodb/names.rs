//! [`Names`] in DynamoDB: tenants, databases, collections and lineages in the
//! `{prefix}catalog` table, with each collection's manifest in `{prefix}manifests`
//! written in the same transaction where the contract says so (see the parent module
//! for the tables and items).

use super::*;
use crate::model::IfExists;

#[async_trait]
impl Names for DynamoCatalog {
    async fn create_tenant(&self, name: &str) -> Result<Tenant> {
        if !self
            .put_new(&self.catalog, tenant_item(name), "pk", "create tenant")
            .await?
        {
            return Err(Error::already_exists(format!(
                "tenant {name} already exists"
            )));
        }
        Ok(Tenant {
            name: name.to_owned(),
            resource_name: None,
        })
    }

    async fn get_tenant(&self, name: &str) -> Result<Tenant> {
        match self.get(&self.catalog, tenant_key(name), None).await? {
            Some(item) => Ok(Tenant {
                name: name.to_owned(),
                resource_name: opt_s(&item, "resource_name")?.map(str::to_owned),
            }),
            None => Err(tenant_not_found(name)),
        }
    }

    async fn set_tenant_resource_name(&self, name: &str, resource_name: &str) -> Result<Tenant> {
        let update = "SET #resource_name = :resource_name";
        let condition = "attribute_exists(pk) AND \
            (attribute_not_exists(#resource_name) OR #resource_name = :resource_name)";
        let result = self
            .client
            .update_item()
            .table_name(&self.catalog)
            .set_key(Some(tenant_key(name)))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(names(&[update, condition]))
            .set_expression_attribute_values(attribute_values(vec![(
                ":resource_name",
                s(resource_name),
            )]))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match write_outcome(result, "set tenant resource name", |e| match e {
            UpdateItemError::ConditionalCheckFailedException(c) => Some(c.item.clone()),
            _ => None,
        })? {
            Write::Done(_) => Ok(Tenant {
                name: name.to_owned(),
                resource_name: Some(resource_name.to_owned()),
            }),
            Write::ConditionFailed(Some(_)) => Err(crate::catalog::tenant_has_resource_name(name)),
            Write::ConditionFailed(None) => Err(tenant_not_found(name)),
        }
    }

    async fn create_database(&self, tenant: &str, name: &str) -> Result<Database> {
        let db = Database {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            tenant: tenant.to_owned(),
        };
        let items = vec![
            tx_check(&self.catalog, tenant_key(tenant), "attribute_exists(pk)")?,
            tx_put(
                &self.catalog,
                database_item(tenant, name, db.id),
                "attribute_not_exists(pk)",
            )?,
        ];
        match self.transact("create database", items).await? {
            None => Ok(db),
            Some(failed) if failed.first().copied().unwrap_or(false) => {
                Err(tenant_not_found(tenant))
            }
            Some(_) => Err(Error::already_exists(format!(
                "database {name} already exists in tenant {tenant}"
            ))),
        }
    }

    async fn get_database(&self, tenant: &str, name: &str) -> Result<Database> {
        let item = self.database_item(tenant, name).await?;
        database_from(&item, tenant)
    }

    async fn list_databases(
        &self,
        tenant: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<Database>> {
        let items = self.query_partition(&tenant_pk(tenant)).await?;
        if !items
            .iter()
            .any(|i| matches!(i.get("sk"), Some(AttributeValue::S(sk)) if sk == "TENANT"))
        {
            return Err(tenant_not_found(tenant));
        }
        let mut dbs = items
            .iter()
            .filter(|i| matches!(i.get("sk"), Some(AttributeValue::S(sk)) if sk.starts_with("DATABASE#")))
            .map(|i| Ok((req_s(i, "order")?.to_owned(), database_from(i, tenant)?)))
            .collect::<Result<Vec<_>>>()?;
        dbs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(page(dbs, limit, offset)
            .into_iter()
            .map(|(_, db)| db)
            .collect())
    }

    async fn delete_database(&self, tenant: &str, name: &str) -> Result<Vec<(Uuid, Manifest)>> {
        let mut removed = Vec::new();
        for attempt in 0..ATTEMPTS {
            if self
                .get(&self.catalog, database_key(tenant, name), Some("pk"))
                .await?
                .is_none()
            {
                // Deleted by a concurrent call after this one's first round.
                return if attempt == 0 {
                    Err(database_not_found(tenant, name))
                } else {
                    Ok(removed)
                };
            }
            for entry in self.query_partition(&names_pk(tenant, name)).await? {
                let id = parse_id(req_s(&entry, "id")?)?;
                match self.delete_collection(id).await {
                    Ok(manifest) => removed.push((id, manifest)),
                    Err(e) if e.code() == ErrorCode::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            let condition = "#collections = :zero";
            let result = self
                .client
                .delete_item()
                .table_name(&self.catalog)
                .set_key(Some(database_key(tenant, name)))
                .condition_expression(condition)
                .set_expression_attribute_names(names(&[condition]))
                .expression_attribute_values(":zero", n(0))
                .send()
                .await;
            match write_outcome(result, "delete database", |e| match e {
                DeleteItemError::ConditionalCheckFailedException(c) => Some(c.item.clone()),
                _ => None,
            })? {
                Write::Done(_) => return Ok(removed),
                // A collection was created meanwhile (or the database is gone): go round.
                Write::ConditionFailed(_) => continue,
            }
        }
        Err(Error::conflict(format!(
            "collections kept being created in database {name} of tenant {tenant} while it was deleted"
        )))
    }

    async fn create_collection(
        &self,
        collection: &Collection,
        manifest: &Manifest,
        if_exists: IfExists,
    ) -> Result<(Collection, bool)> {
        let mut collection = collection.clone();
        collection.dimension = manifest.dimension;
        let content = self.store_content(collection.id, manifest).await?;
        let result = self
            .create_collection_tx(&collection, manifest, &content, if_exists)
            .await;
        // The object stays only if the collection was created, or may have been (an
        // ambiguous failure).
        let definitely_not_stored = match &result {
            Ok((_, created)) => !created,
            Err(e) => matches!(e.code(), ErrorCode::NotFound | ErrorCode::AlreadyExists),
        };
        if definitely_not_stored {
            self.discard(&content).await;
        }
        result
    }

    async fn get_collection(&self, tenant: &str, database: &str, name: &str) -> Result<Collection> {
        self.collection_by_name(tenant, database, name)
            .await?
            .ok_or_else(|| collection_name_missing(name))
    }

    async fn get_collection_by_id(&self, id: Uuid) -> Result<Collection> {
        self.collection_by_id(id)
            .await?
            .ok_or_else(|| collection_id_missing(id))
    }

    async fn get_collection_with_manifest(&self, id: Uuid) -> Result<(Collection, Manifest)> {
        for _ in 0..ATTEMPTS {
            let (collection, item) = self
                .collection_with_item(id)
                .await?
                .ok_or_else(|| collection_id_missing(id))?;
            if let Some(manifest) = self.decode_manifest(&item).await? {
                return Ok((collection, manifest));
            }
            // Its overflow object was replaced after the item was read.
        }
        Err(Error::internal(format!(
            "corrupted catalog: the manifest of collection {id} points at a missing object"
        )))
    }

    async fn list_collections(
        &self,
        tenant: &str,
        database: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Vec<Collection>> {
        self.database_item(tenant, database).await?;
        let mut entries = self
            .query_partition(&names_pk(tenant, database))
            .await?
            .iter()
            .map(|e| Ok((req_s(e, "order")?.to_owned(), parse_id(req_s(e, "id")?)?)))
            .collect::<Result<Vec<_>>>()?;
        entries.sort();
        let ids: Vec<Uuid> = page(entries, limit, offset)
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        self.collections_by_ids(&ids).await
    }

    async fn count_collections(&self, tenant: &str, database: &str) -> Result<u64> {
        let item = self.database_item(tenant, database).await?;
        req_n(&item, "collections")
    }

    async fn list_all_collections(&self) -> Result<Vec<Collection>> {
        // Records first: a collection created after this scan is missed whole, and one
        // deleted before the manifests scan is left out (it has no manifest any more).
        let records = self
            .scan(
                &self.catalog,
                Some(("begins_with(pk, :filter)", s("COLLECTION#"))),
                None,
            )
            .await?;
        let manifests = self
            .scan(&self.manifests, None, Some("#id, #dimension"))
            .await?;
        let dimensions = dimensions(&manifests)?;
        let mut all = Vec::with_capacity(records.len());
        for record in &records {
            if let Some(dimension) = dimensions.get(req_s(record, "id")?) {
                all.push((
                    req_s(record, "order")?,
                    collection_from(record, *dimension)?,
                ));
            }
        }
        all.sort_by(|a, b| a.0.cmp(b.0));
        Ok(all.into_iter().map(|(_, c)| c).collect())
    }

    async fn update_collection(&self, id: Uuid, update: &CollectionUpdate) -> Result<Collection> {
        for _ in 0..ATTEMPTS {
            if self.update_once(id, update).await?.is_some() {
                return self.get_collection_by_id(id).await;
            }
        }
        Err(Error::conflict(format!(
            "collection {id} kept changing while being updated"
        )))
    }

    async fn delete_collection(&self, id: Uuid) -> Result<Manifest> {
        for _ in 0..ATTEMPTS {
            let record = self
                .get(&self.catalog, collection_key(id), None)
                .await?
                .ok_or_else(|| collection_id_missing(id))?;
            let c = collection_from(&record, None)?;
            // Missing only if deleted meanwhile: the next round's read says so.
            let Some((manifest, item)) = self.load_manifest(id).await? else {
                continue;
            };
            let mut items = vec![
                tx_delete(
                    &self.catalog,
                    collection_key(id),
                    "#name = :name",
                    vec![(":name", s(&c.name))],
                )?,
                tx_delete(
                    &self.catalog,
                    name_key(&c.tenant, &c.database, &c.name),
                    "#id = :id",
                    vec![(":id", s(id.to_string()))],
                )?,
                tx_delete(
                    &self.manifests,
                    manifest_key(id),
                    "#version = :version",
                    vec![(":version", n(req_n(&item, "version")?))],
                )?,
                tx_update(
                    &self.catalog,
                    database_key(&c.tenant, &c.database),
                    "ADD #collections :minus_one",
                    "attribute_exists(pk)",
                    vec![(":minus_one", AttributeValue::N("-1".to_owned()))],
                )?,
            ];
            items.extend(self.leave_lineage(&c, &manifest).await?);
            // A failed condition means a rename, a commit, a fork or another member's
            // deletion came in between: go round.
            if self.transact("delete collection", items).await?.is_none() {
                if let Some(key) = opt_s(&item, "overflow")? {
                    self.delete_object(key).await;
                }
                return Ok(manifest);
            }
        }
        Err(Error::conflict(format!(
            "collection {id} kept changing while being deleted"
        )))
    }

    async fn fork_collection(&self, source: Uuid, id: Uuid, name: &str) -> Result<Collection> {
        let order = next_order();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                // Another fork or commit won the last round: let the herd thin out.
                backoff(attempt).await;
            }
            if let Some(fork) = self.fork_once(source, id, name, &order).await? {
                return Ok(fork);
            }
        }
        Err(Error::conflict(format!(
            "collection {source} kept changing while being forked"
        )))
    }

    async fn get_lineage(&self, root: Uuid) -> Result<Option<Lineage>> {
        self.get(&self.catalog, lineage_key(root), None)
            .await?
            .map(|item| lineage_from(&item))
            .transpose()
    }

    async fn reset(&self) -> Result<()> {
        // Catalog items first (nothing reachable), then manifests, then overflow objects.
        let keys = self.scan(&self.catalog, None, Some("pk, sk")).await?;
        self.batch_delete(&self.catalog, keys).await?;
        let keys = self.scan(&self.manifests, None, Some("#id")).await?;
        self.batch_delete(&self.manifests, keys).await?;
        for object in self.overflow.list(OVERFLOW_PREFIX).await? {
            self.overflow.delete(&object.key).await?;
        }
        self.ensure_defaults().await
    }
}
