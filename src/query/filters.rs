//! The `filters` parameter: `visit:source==Google;event:page==/blog/**`.
//!
//! Conditions are joined by `;` and all must hold; `|` separates alternatives
//! (`visit:country==DE|FR`). Operators: `==` (equals; `*` and `**` are
//! wildcards in page paths), `!=`, and `~` (contains).

use super::{QueryError, bad};
use crate::report::model::{Filter, FilterField, FilterOp, VisitColumn};

/// How reports show a missing value; filtering on it matches the missing value.
const NONE_LABELS: &[&str] = &["Direct / None", "(none)"];

pub fn parse(param: Option<&str>) -> Result<Vec<Filter>, QueryError> {
    let Some(param) = param else {
        return Ok(Vec::new());
    };
    param
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(parse_one)
        .collect()
}

fn parse_one(condition: &str) -> Result<Filter, QueryError> {
    let (at, op, len) = ["==", "!=", "~"]
        .iter()
        .filter_map(|token| condition.find(token).map(|at| (at, *token, token.len())))
        .min_by_key(|(at, _, _)| *at)
        .ok_or_else(|| {
            bad(format!(
                "filters: `{condition}` has no operator (use ==, != or ~)"
            ))
        })?;
    let property = condition[..at].trim();
    let value = condition[at + len..].trim();
    let op = match op {
        "==" => FilterOp::Is,
        "!=" => FilterOp::IsNot,
        _ => FilterOp::Contains,
    };
    if value.is_empty() {
        return Err(bad(format!("filters: `{condition}` has no value")));
    }
    let values: Vec<&str> = value.split('|').map(str::trim).collect();
    if property == "event:goal" {
        // A goal is an event name, or "Visit /path" for a page goal.
        let pages: Vec<Option<String>> = values
            .iter()
            .filter_map(|v| v.strip_prefix("Visit ").map(|p| Some(p.to_string())))
            .collect();
        let field = if pages.is_empty() {
            FilterField::EventName
        } else {
            FilterField::Page
        };
        if !pages.is_empty() && pages.len() != values.len() {
            return Err(bad(
                "filters: event:goal cannot mix event and page goals in one condition",
            ));
        }
        let values = if pages.is_empty() {
            values.iter().map(|v| Some(v.to_string())).collect()
        } else {
            pages
        };
        return Ok(Filter { field, op, values });
    }
    let field = match property {
        "event:page" => FilterField::Page,
        "event:name" => FilterField::EventName,
        _ => {
            if let Some(key) = property.strip_prefix("event:props:") {
                if key.is_empty() {
                    return Err(bad("filters: event:props: needs a property name"));
                }
                FilterField::Prop(key.to_string())
            } else if let Some(column) = property
                .strip_prefix("visit:")
                .and_then(VisitColumn::from_name)
            {
                FilterField::Visit(column)
            } else {
                return Err(bad(format!("filters: unknown property `{property}`")));
            }
        }
    };
    let values = values
        .into_iter()
        .map(|v| {
            let none = matches!(field, FilterField::Visit(_)) && NONE_LABELS.contains(&v);
            (!none).then(|| v.to_string())
        })
        .collect();
    Ok(Filter { field, op, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plausible_filters() {
        let f = parse(Some(
            "visit:source==Google|Direct / None;event:page==/blog/**;visit:country!=DE",
        ))
        .unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].field, FilterField::Visit(VisitColumn::Source));
        assert_eq!(f[0].values, vec![Some("Google".into()), None]);
        assert_eq!(f[1].field, FilterField::Page);
        assert_eq!(f[2].op, FilterOp::IsNot);
        let g = parse(Some("event:goal==Visit /thanks")).unwrap();
        assert_eq!(g[0].field, FilterField::Page);
        let c = parse(Some("event:props:plan~pro")).unwrap();
        assert_eq!(
            (c[0].field.clone(), c[0].op),
            (FilterField::Prop("plan".into()), FilterOp::Contains)
        );
        assert!(parse(Some("visit:password==x")).is_err());
        assert!(parse(Some("visit:source")).is_err());
        assert!(parse(Some("visit:source==")).is_err());
        assert!(parse(None).unwrap().is_empty());
    }
}
