//! The static token file (`--token-auth-file`): CSV lines `token,user,uid[,"group1,group2"]`,
//! as upstream reads it.

use std::collections::HashMap;

use crate::user::UserInfo;

#[derive(Default)]
pub struct TokenFile {
    tokens: HashMap<String, UserInfo>,
}

impl TokenFile {
    pub fn parse(text: &str) -> Result<TokenFile, String> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .comment(Some(b'#'))
            .from_reader(text.as_bytes());
        let mut tokens = HashMap::new();
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| format!("line {}: {e}", i + 1))?;
            if record.len() < 3 {
                return Err(format!(
                    "token file must have at least 3 columns (token, user name, user uid), found {}",
                    record.len()
                ));
            }
            let token = record[0].to_string();
            if token.is_empty() {
                continue;
            }
            let groups = record
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let user = UserInfo {
                name: record[1].to_string(),
                uid: record[2].to_string(),
                groups,
                ..UserInfo::default()
            };
            tokens.insert(token, user);
        }
        Ok(TokenFile { tokens })
    }

    pub fn authenticate(&self, token: &str) -> Option<&UserInfo> {
        self.tokens.get(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_a_user_with_uid_and_quoted_groups() {
        let file = TokenFile::parse(
            "# comment\nsecret-1,alice,1001,\"dev, ops\"\nsecret-2,bob,1002\n,empty,0\n",
        )
        .unwrap();
        let alice = file.authenticate("secret-1").unwrap();
        assert_eq!((alice.name.as_str(), alice.uid.as_str()), ("alice", "1001"));
        assert_eq!(alice.groups, vec!["dev", "ops"]);
        assert!(file.authenticate("secret-2").unwrap().groups.is_empty());
        assert!(file.authenticate("").is_none());
        assert!(file.authenticate("secret-3").is_none());
        assert!(TokenFile::parse("only,two\n").is_err());
    }
}
