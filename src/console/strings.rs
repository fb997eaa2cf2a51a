//! The console's words in each language (`templates/console/strings/{en,zh}.json`): the
//! templates read them as `t.key`, and the script gets the same map in a JSON data block.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use crate::api::Lang;

pub type Strings = BTreeMap<String, String>;

struct Catalogue {
    en: Strings,
    zh: Strings,
    en_json: String,
    zh_json: String,
}

static CATALOGUE: LazyLock<Catalogue> = LazyLock::new(|| {
    let en: Strings = serde_json::from_str(include_str!("../../templates/console/strings/en.json"))
        .expect("the English strings are a JSON object of strings");
    let zh: Strings = serde_json::from_str(include_str!("../../templates/console/strings/zh.json"))
        .expect("the Chinese strings are a JSON object of strings");
    Catalogue {
        en_json: script_safe_json(&en),
        zh_json: script_safe_json(&zh),
        en,
        zh,
    }
});

pub fn strings(lang: Lang) -> &'static Strings {
    match lang {
        Lang::En => &CATALOGUE.en,
        Lang::Zh => &CATALOGUE.zh,
    }
}

/// The strings as JSON that can sit inside a `<script type="application/json">` element: the
/// HTML parser ends such an element at `</script` whatever the JSON says, so every `<` is
/// written as its JSON escape.
pub fn strings_json(lang: Lang) -> &'static str {
    match lang {
        Lang::En => &CATALOGUE.en_json,
        Lang::Zh => &CATALOGUE.zh_json,
    }
}

fn script_safe_json(strings: &Strings) -> String {
    serde_json::to_string(strings)
        .expect("strings serialise")
        .replace('<', "\\u003c")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_languages_have_the_same_words() {
        let en: Vec<_> = strings(Lang::En).keys().collect();
        let zh: Vec<_> = strings(Lang::Zh).keys().collect();
        assert_eq!(en, zh);
    }

    #[test]
    fn the_script_block_cannot_be_closed_by_a_string() {
        let mut strings = Strings::new();
        strings.insert("x".into(), "</script><script>alert(1)</script>".into());
        let json = script_safe_json(&strings);
        assert!(!json.contains('<'));
        let back: Strings = serde_json::from_str(&json).unwrap();
        assert_eq!(back, strings);
    }
}
