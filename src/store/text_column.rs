//! Typed values the journal keeps as text: each enum has one `as_str()` spelling, which is what
//! both backends store and what `--json` and the CLI print. This macro gives such an enum its
//! `Display`, its `Serialize` (as that spelling), and its SQL conversions for SQLite and
//! PostgreSQL, so readers get the typed value straight from a row and no caller compares text.

/// `stored_as_text!(Type, "what it is")`: `Type` must have `fn as_str(self) -> &'static str` and
/// `fn parse(&str) -> Option<Type>`. A stored spelling that does not parse is a read error naming
/// `what` (the journal only ever holds spellings this binary wrote, or an older one that it reads).
macro_rules! stored_as_text {
    ($t:ty, $what:literal) => {
        impl ::std::fmt::Display for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $t {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl ::rusqlite::types::FromSql for $t {
            fn column_result(value: ::rusqlite::types::ValueRef<'_>) -> ::rusqlite::types::FromSqlResult<Self> {
                let s = value.as_str()?;
                <$t>::parse(s).ok_or_else(|| {
                    ::rusqlite::types::FromSqlError::Other(format!(concat!("unknown ", $what, " '{}'"), s).into())
                })
            }
        }

        impl ::rusqlite::types::ToSql for $t {
            fn to_sql(&self) -> ::rusqlite::Result<::rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl<'a> ::tokio_postgres::types::FromSql<'a> for $t {
            fn from_sql(
                ty: &::tokio_postgres::types::Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn ::std::error::Error + Sync + Send>> {
                let s = <&str as ::tokio_postgres::types::FromSql>::from_sql(ty, raw)?;
                <$t>::parse(s).ok_or_else(|| format!(concat!("unknown ", $what, " '{}'"), s).into())
            }

            fn accepts(ty: &::tokio_postgres::types::Type) -> bool {
                <&str as ::tokio_postgres::types::FromSql>::accepts(ty)
            }
        }

        impl ::tokio_postgres::types::ToSql for $t {
            fn to_sql(
                &self,
                ty: &::tokio_postgres::types::Type,
                out: &mut ::bytes::BytesMut,
            ) -> Result<::tokio_postgres::types::IsNull, Box<dyn ::std::error::Error + Sync + Send>> {
                ::tokio_postgres::types::ToSql::to_sql(&self.as_str(), ty, out)
            }

            fn accepts(ty: &::tokio_postgres::types::Type) -> bool {
                <&str as ::tokio_postgres::types::ToSql>::accepts(ty)
            }

            ::tokio_postgres::types::to_sql_checked!();
        }
    };
}

pub(crate) use stored_as_text;
