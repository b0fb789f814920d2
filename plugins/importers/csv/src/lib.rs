//! The CSV importer: the first import most admins run. The CSV has a header
//! row; columns are matched to directory attributes by name, forgivingly
//! ("First Name", "first_name", "Given name"), and any other column becomes
//! a custom attribute of that name (which the directory then validates).
//! Rows come out in pages of 1,000; the cursor is the next row's number.

use cohort_sdk::config::{Config, field, invalid};
use cohort_sdk::host::{self, Method};
use cohort_sdk::importer::{ImportError, Importer, Page, RecordProblem};
use cohort_sdk::{ConfigError, ConfigKind, DirectoryRecord, PluginInfo};

/// Rows per page.
const PAGE: usize = 1000;

/// The importer.
pub struct Csv;

/// The directory attribute a header names.
fn attribute(header: &str) -> String {
    let n: String = header
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { '_' })
        .collect();
    let n = n.trim_matches('_').to_string();
    let alias = match n.as_str() {
        "mail" | "e_mail" | "email_address" | "work_email" => "email",
        "user_name" | "login" => "username",
        "first" | "firstname" | "given_name" | "givenname" => "first_name",
        "last" | "lastname" | "surname" | "family_name" | "familyname" => "last_name",
        "name" | "full_name" | "displayname" => "display_name",
        "title" | "job" | "jobtitle" | "position" => "job_title",
        "dept" => "department",
        "office" | "city" => "location",
        "employee_number" | "employeeid" | "employee_no" | "employeenumber" => "employee_id",
        "costcenter" => "cost_center",
        "phone_number" | "mobile" | "telephone" | "phonenumber" => "phone",
        "organization" | "organisation" => "company",
        "employment_type" | "worker_type" => "employee_type",
        other => other,
    };
    alias.to_string()
}

/// Parses CSV (RFC 4180: quoted fields, doubled quotes, CRLF or LF). Each
/// row comes with its line number.
fn parse(text: &str, delimiter: char) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut line = 1;
    let mut row_line = 1;
    let mut chars = text.trim_start_matches('\u{feff}').chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            c if c == delimiter => row.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                if !(row.len() == 1 && row[0].is_empty()) {
                    rows.push((row_line, std::mem::take(&mut row)));
                }
                row.clear();
                line += 1;
                row_line = line;
            }
            c => field.push(c),
        }
    }
    if quoted {
        return Err(format!("line {row_line}: a quoted field is not closed"));
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push((row_line, row));
    }
    Ok(rows)
}

fn delimiter(config: &Config) -> Result<char, ConfigError> {
    match config.text("delimiter").filter(|d| !d.is_empty()) {
        None => Ok(','),
        Some(d) if d.chars().count() == 1 => Ok(d.chars().next().unwrap_or(',')),
        Some(_) => Err(invalid("delimiter", "one character, such as , or ;")),
    }
}

fn text(config: &Config) -> Result<String, ImportError> {
    if let Some(d) = config.text("data").filter(|d| !d.trim().is_empty()) {
        return Ok(d.to_string());
    }
    let url = config.require_text("url")?;
    let mut request = host::request(Method::Get, url).header("accept", "text/csv");
    if let Some(t) = config.text("token") {
        request = request.bearer(t);
    }
    let (body, _) = request.fetch_text()?;
    Ok(body)
}

/// One page of rows from `start`.
fn page(
    text: &str,
    delimiter: char,
    id_column: Option<&str>,
    start: usize,
) -> Result<Page, ImportError> {
    let rows = parse(text, delimiter).map_err(ImportError::BadResponse)?;
    let Some(((_, header), body)) = rows.split_first() else {
        return Ok(Page {
            records: Vec::new(),
            problems: Vec::new(),
            next_cursor: None,
        });
    };
    let names: Vec<String> = header.iter().map(|h| attribute(h)).collect();
    if !names.iter().any(|n| n == "email") {
        return Err(ImportError::BadResponse(
            "the header has no email column".into(),
        ));
    }
    let id = match id_column {
        Some(c) => attribute(c),
        None if names.iter().any(|n| n == "employee_id") => "employee_id".into(),
        None => "email".into(),
    };
    let Some(id_at) = names.iter().position(|n| *n == id) else {
        return Err(ImportError::BadResponse(format!(
            "the id column {id:?} is not in the header"
        )));
    };
    let mut records = Vec::new();
    let mut problems = Vec::new();
    for (line, cells) in body.iter().skip(start).take(PAGE) {
        if cells.len() != names.len() {
            problems.push(RecordProblem {
                external_id: cells.get(id_at).cloned().filter(|s| !s.is_empty()),
                message: format!(
                    "line {line}: {} fields where the header has {}",
                    cells.len(),
                    names.len()
                ),
            });
            continue;
        }
        let external = cells[id_at].trim();
        if external.is_empty() {
            problems.push(RecordProblem {
                external_id: None,
                message: format!("line {line}: no {id}"),
            });
            continue;
        }
        let mut record = DirectoryRecord::user(external);
        for (name, value) in names.iter().zip(cells) {
            let value = value.trim();
            if !value.is_empty() {
                record = record.with(name.clone(), value.to_string());
            }
        }
        records.push(record);
    }
    let next = start + PAGE;
    Ok(Page {
        records,
        problems,
        next_cursor: (next < body.len()).then(|| next.to_string()),
    })
}

impl Importer for Csv {
    fn describe() -> PluginInfo {
        PluginInfo {
            display_name: "CSV".into(),
            description: "People from a CSV file with a header row, pasted or at a URL.".into(),
            config: vec![
                field(
                    "data",
                    "CSV",
                    "The CSV text itself, with a header row. Either this or a URL.",
                    ConfigKind::Text,
                    false,
                ),
                field(
                    "url",
                    "CSV URL",
                    "Where to download the CSV (it is read again for every page of 1,000 rows).",
                    ConfigKind::Url,
                    false,
                ),
                field(
                    "token",
                    "Bearer token",
                    "Sent as Authorization: Bearer with the URL.",
                    ConfigKind::Secret,
                    false,
                ),
                field(
                    "delimiter",
                    "Delimiter",
                    "One character; default a comma. Use a semicolon for spreadsheets saved in many European locales.",
                    ConfigKind::Text,
                    false,
                ),
                field(
                    "id_column",
                    "Id column",
                    "The column that identifies a person across imports. Default: employee_id when present, else email.",
                    ConfigKind::Text,
                    false,
                ),
            ],
        }
    }

    fn validate_config(config: &Config) -> Result<(), ConfigError> {
        let data = config.text("data").filter(|d| !d.trim().is_empty());
        let url = config.text("url").filter(|u| !u.trim().is_empty());
        match (data, url) {
            (None, None) => return Err(invalid("data", "paste the CSV, or give its url")),
            (Some(_), Some(_)) => return Err(invalid("url", "give the CSV or a URL, not both")),
            (Some(d), None) => {
                let rows = parse(d, delimiter(config)?).map_err(|e| invalid("data", e))?;
                let header: Vec<String> = rows
                    .first()
                    .map(|(_, h)| h.iter().map(|c| attribute(c)).collect())
                    .unwrap_or_default();
                if !header.iter().any(|h| h == "email") {
                    return Err(invalid("data", "the header row has no email column"));
                }
            }
            (None, Some(_)) => {}
        }
        delimiter(config)?;
        Ok(())
    }

    fn fetch_page(config: &Config, cursor: Option<String>) -> Result<Page, ImportError> {
        let start = match cursor {
            Some(c) => c
                .parse()
                .map_err(|_| ImportError::Other(format!("bad cursor {c:?}")))?,
            None => 0,
        };
        let d = delimiter(config)?;
        page(&text(config)?, d, config.text("id_column"), start)
    }
}

cohort_sdk::export_importer!(Csv);

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(r: &DirectoryRecord) -> Vec<(String, String)> {
        r.attributes
            .iter()
            .map(|a| (a.name.clone(), format!("{:?}", a.value)))
            .collect()
    }

    #[test]
    fn headers_are_matched_forgivingly() {
        assert_eq!(attribute("First Name"), "first_name");
        assert_eq!(attribute("E-mail"), "email");
        assert_eq!(attribute("Employee Number"), "employee_id");
        assert_eq!(attribute("Cost Center"), "cost_center");
        assert_eq!(attribute("Badge Color"), "badge_color");
    }

    #[test]
    fn quoted_fields_doubled_quotes_and_newlines_parse() {
        let rows = parse(
            "a,b\r\n\"x, y\",\"say \"\"hi\"\"\"\n\"multi\nline\",z\n",
            ',',
        )
        .unwrap();
        assert_eq!(rows[1].1, ["x, y", "say \"hi\""]);
        assert_eq!(
            rows[2],
            (3, vec!["multi\nline".to_string(), "z".to_string()])
        );
        assert!(parse("a\n\"open", ',').is_err());
    }

    #[test]
    fn rows_become_records_and_bad_rows_problems() {
        let csv = "Employee ID,Email,First Name,Department\n\
                   7,ada@example.com,Ada,Engineering\n\
                   8,bo@example.com\n\
                   ,cy@example.com,Cy,Ops\n";
        let p = page(csv, ',', None, 0).unwrap();
        assert_eq!(p.records.len(), 1);
        assert_eq!(p.records[0].external_id, "7");
        assert!(
            attrs(&p.records[0])
                .iter()
                .any(|(n, v)| n == "department" && v.contains("Engineering"))
        );
        assert_eq!(p.problems.len(), 2);
        assert!(p.problems[0].message.contains("line 3"), "{:?}", p.problems);
        assert!(p.next_cursor.is_none());
    }

    #[test]
    fn pages_of_a_thousand() {
        let mut csv = String::from("email\n");
        for i in 0..2500 {
            csv.push_str(&format!("u{i}@example.com\n"));
        }
        let first = page(&csv, ',', None, 0).unwrap();
        assert_eq!(first.records.len(), 1000);
        assert_eq!(first.next_cursor.as_deref(), Some("1000"));
        let last = page(&csv, ',', None, 2000).unwrap();
        assert_eq!(last.records.len(), 500);
        assert_eq!(last.records[0].external_id, "u2000@example.com");
        assert!(last.next_cursor.is_none());
    }
}
