//! [`Manifests`] in DynamoDB: the compare-and-swap of a collection's manifest on its
//! `version` in `{prefix}manifests` (see the parent module for the items and the
//! overflow of large manifests to S3).

use super::*;

#[async_trait]
impl Manifests for DynamoCatalog {
    async fn get_manifest(&self, id: Uuid) -> Result<Manifest> {
        match self.load_manifest(id).await? {
            Some((manifest, _)) => Ok(manifest),
            None => Err(collection_id_missing(id)),
        }
    }

    async fn commit_manifest(&self, id: Uuid, manifest: &Manifest) -> Result<()> {
        let content = self.store_content(id, manifest).await?;
        let commit = next_order();
        // No stored version is negative: versions below 1 can never follow one.
        let expected = manifest
            .version
            .checked_sub(1)
            .map_or_else(|| "-1".to_owned(), |v| v.to_string());
        let (set, value, remove) = match &content {
            Content::Inline(body) => ("#body = :content", body, "#overflow"),
            Content::Overflow(key) => ("#overflow = :content", key, "#body"),
        };
        let mut values = vec![
            (":version", n(manifest.version)),
            (":commit", s(&commit)),
            (":content", s(value)),
            (":expected", AttributeValue::N(expected)),
        ];
        let mut update = format!("SET #version = :version, #commit = :commit, {set}");
        let mut removed = vec![remove];
        match manifest.dimension {
            Some(d) => {
                update.push_str(", #dimension = :dimension");
                values.push((":dimension", n(u64::from(d))));
            }
            None => removed.push("#dimension"),
        }
        update.push_str(&format!(" REMOVE {}", removed.join(", ")));
        let condition = "#version = :expected";
        let result = self
            .client
            .update_item()
            .table_name(&self.manifests)
            .set_key(Some(manifest_key(id)))
            .update_expression(&update)
            .condition_expression(condition)
            .set_expression_attribute_names(names(&[&update, condition]))
            .set_expression_attribute_values(attribute_values(values))
            .return_values(ReturnValue::UpdatedOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        // On any other error the write may have landed: the object stays.
        let outcome = write_outcome(result, "commit manifest", |e| match e {
            UpdateItemError::ConditionalCheckFailedException(c) => Some(c.item.clone()),
            _ => None,
        })?;
        match outcome {
            Write::Done(out) => {
                let previous = out
                    .attributes
                    .as_ref()
                    .and_then(|a| opt_s(a, "overflow").ok().flatten());
                if let Some(previous) = previous {
                    self.delete_object(previous).await;
                }
                Ok(())
            }
            // An earlier attempt of this very call landed (the SDK retried it); the
            // previous version's object, if any, is left behind.
            Write::ConditionFailed(Some(stored))
                if stored.get("commit") == Some(&AttributeValue::S(commit.clone())) =>
            {
                Ok(())
            }
            Write::ConditionFailed(stored) => {
                self.discard(&content).await;
                match stored {
                    None => Err(collection_id_missing(id)),
                    Some(stored) => Err(Error::conflict(format!(
                        "manifest of collection {id} is at version {}, cannot commit version {}",
                        req_n(&stored, "version")?,
                        manifest.version
                    ))),
                }
            }
        }
    }
}
