//! A chat UI's built-in tool catalogue, as such clients send it with every chat: 36 function
//! definitions with full descriptions and parameter schemas, about 25 KB of JSON (the size of
//! Open WebUI 0.12's default native function calling). Our own text, written for these tests.

use serde_json::{json, Map, Value};

/// (area, what the area holds) for the catalogue's twelve areas.
const AREAS: [(&str, &str); 12] = [
    ("notes", "the user's personal notes, written in Markdown"),
    (
        "memories",
        "facts the assistant has been asked to remember about the user",
    ),
    (
        "calendar",
        "events in the user's calendars, with their times and places",
    ),
    ("files", "documents the user uploaded to this workspace"),
    ("knowledge", "the knowledge bases shared with the user"),
    ("channels", "the chat channels the user is a member of"),
    ("web", "pages on the public web"),
    ("images", "images generated or uploaded in this workspace"),
    ("tasks", "the user's to-do lists and their items"),
    ("contacts", "people in the user's address book"),
    ("models", "the language models this server offers"),
    ("code", "snippets of code run in a sandbox on the server"),
];

/// (verb, what it does, its parameters as (name, JSON type, description)).
type Action = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str, &'static str)],
);

const ACTIONS: [Action; 3] = [
    (
        "search",
        "Searches {what} for items that match a free-text query and returns the best matches \
         with their identifiers, titles and a short excerpt of each. Use it before reading or \
         changing an item whose identifier is not known yet.",
        &[
            ("query", "string", "Words to look for; a phrase in double quotes matches exactly."),
            ("limit", "integer", "How many matches to return at most, from 1 to 50 (default 10)."),
            ("since", "string", "Only items changed on or after this date, written as YYYY-MM-DD; leave it out to search everything."),
        ],
    ),
    (
        "read",
        "Reads one item of {what} in full, given the identifier a search returned, with its \
         metadata (owner, dates, tags) and its whole content as text.",
        &[
            ("id", "string", "The item's identifier, exactly as a search or a listing returned it."),
            ("format", "string", "How to return the content: \"text\" (the default), \"markdown\" or \"json\" where the item has structure."),
        ],
    ),
    (
        "update",
        "Creates or changes an item of {what}: without an identifier a new item is created, with \
         one the given fields replace the item's. Returns the item's identifier.",
        &[
            ("id", "string", "The identifier of the item to change; leave it out to create a new item."),
            ("title", "string", "A short title for the item, shown in lists and search results."),
            ("content", "string", "The item's new content as text or Markdown; it replaces the whole previous content."),
            ("tags", "array", "Labels to file the item under, as a list of short strings; an empty list removes every label."),
        ],
    ),
];

/// The catalogue: for each area, `search_AREA`, `read_AREA` and `update_AREA`, in that order.
pub fn tool_catalog() -> Value {
    let mut tools = Vec::new();
    for (area, what) in AREAS {
        for (verb, description, params) in ACTIONS {
            let mut properties = Map::new();
            for &(name, kind, text) in params {
                let mut schema = json!({"type": kind, "description": text});
                if kind == "array" {
                    schema["items"] = json!({"type": "string"});
                }
                properties.insert(name.to_owned(), schema);
            }
            tools.push(json!({
                "type": "function",
                "function": {
                    "name": format!("{verb}_{area}"),
                    "description": description.replace("{what}", what),
                    "parameters": {
                        "type": "object",
                        "properties": properties,
                        "required": [params[0].0],
                    }
                }
            }));
        }
    }
    Value::Array(tools)
}

/// The names of the catalogue's tools, in order.
pub fn tool_names(tools: &Value) -> Vec<String> {
    tools
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str().map(str::to_owned))
        .collect()
}
