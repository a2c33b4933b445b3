//! [`ApiKeys`] in DynamoDB: one item per key in `{prefix}api-keys` (see the parent
//! module).

use super::*;

#[async_trait]
impl ApiKeys for DynamoCatalog {
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        let mut item = HashMap::from([
            ("id".to_owned(), s(&key.id)),
            ("body".to_owned(), s(to_json(key)?)),
            ("created_at_ms".to_owned(), n(key.created_at_ms)),
            ("order".to_owned(), s(next_order())),
        ]);
        if let Some(at) = key.revoked_at_ms {
            item.insert("revoked_at_ms".to_owned(), n(at));
        }
        if !self
            .put_new(&self.api_keys, item, "#id", "create api key")
            .await?
        {
            return Err(Error::already_exists(format!(
                "api key {} already exists",
                key.id
            )));
        }
        Ok(())
    }

    async fn get_api_key(&self, id: &str) -> Result<ApiKeyRecord> {
        match self.get(&self.api_keys, api_key_key(id), None).await? {
            Some(item) => api_key_from(&item),
            None => Err(api_key_not_found(id)),
        }
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let items = self.scan(&self.api_keys, None, None).await?;
        let mut keys = items
            .iter()
            .map(|i| {
                Ok((
                    req_n(i, "created_at_ms")?,
                    req_s(i, "order")?,
                    api_key_from(i)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        keys.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        Ok(keys.into_iter().map(|(_, _, k)| k).collect())
    }

    async fn revoke_api_key(&self, id: &str, at_ms: u64) -> Result<ApiKeyRecord> {
        let update = "SET #revoked_at_ms = if_not_exists(#revoked_at_ms, :at)";
        let condition = "attribute_exists(#id)";
        let result = self
            .client
            .update_item()
            .table_name(&self.api_keys)
            .set_key(Some(api_key_key(id)))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(names(&[update, condition]))
            .expression_attribute_values(":at", n(at_ms))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match write_outcome(result, "revoke api key", |e| match e {
            UpdateItemError::ConditionalCheckFailedException(c) => Some(c.item.clone()),
            _ => None,
        })? {
            Write::Done(out) => api_key_from(&out.attributes.unwrap_or_default()),
            Write::ConditionFailed(_) => Err(api_key_not_found(id)),
        }
    }
}
