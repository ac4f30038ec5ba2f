//! Access tokens, in group 0: a token's row holds the SHA-256 of its secret,
//! its grant and its expiry; `strata token create` makes the secret and
//! shows it once, the nodes check presented tokens against these rows.

use crate::MetaError;
use crate::request::{MetaResponse, MetaResult};
use crate::server::ops::Ctx;
use crate::server::store::{DbError, Rows, RowsMut, decode, key};
use crate::types::*;

/// Longest token id, and the bytes an id may have.
const MAX_ID_LEN: usize = 32;

impl<T: RowsMut> Ctx<'_, T> {
    pub(crate) fn put_token(&mut self, token: Token) -> Result<MetaResult, DbError> {
        let valid_id = !token.id.is_empty()
            && token.id.len() <= MAX_ID_LEN
            && token.id.bytes().all(|b| b.is_ascii_alphanumeric());
        if !valid_id || token.secret_sha256.len() != 32 {
            return Ok(Err(MetaError::Invalid(format!(
                "token {:?}: an id of 1 to {MAX_ID_LEN} letters and digits and a SHA-256",
                token.id
            ))));
        }
        if matches!(token.grant, Grant::Admin) {
            return Ok(Err(MetaError::Invalid(
                "a token names one filesystem; administrators use certificates".into(),
            )));
        }
        let k = key::token(self.g, &token.id);
        if self.t.load_raw(&k)?.is_some() {
            return Ok(Err(MetaError::Exists));
        }
        self.t.put(&k, &token)?;
        Ok(Ok(MetaResponse::Ok))
    }

    pub(crate) fn revoke_token(&mut self, id: &str) -> Result<MetaResult, DbError> {
        let k = key::token(self.g, id);
        if self.t.load_raw(&k)?.is_none() {
            return Ok(Err(MetaError::NotFound));
        }
        self.t.del(&k)?;
        Ok(Ok(MetaResponse::Ok))
    }
}

/// Answers `ListTokens` (`id` None) and `GetToken`.
pub(crate) fn tokens<T: Rows>(t: &T, g: GroupId, id: Option<&str>) -> Result<MetaResult, DbError> {
    let list = match id {
        Some(id) => t.load::<Token>(&key::token(g, id))?.into_iter().collect(),
        None => {
            let rows = t.scan(&key::token_prefix(g), None, usize::MAX)?;
            let mut list = Vec::with_capacity(rows.len());
            for (_, v) in rows {
                list.push(decode(&v)?);
            }
            list
        }
    };
    Ok(Ok(MetaResponse::Tokens(list)))
}
