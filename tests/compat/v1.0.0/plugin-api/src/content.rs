//! Typed multimodal content: what a policy observes (`Observation` of text,
//! image and audio parts) and what it decides (`Action`). Binary data is bytes
//! in memory and base64 in JSON, so any observation can go on the log.

use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::contracts::JsonObject;

/// One piece of observed content, tagged by `kind` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ContentPart {
    /// Plain text.
    Text {
        /// The text itself.
        text: String,
    },
    /// An image; `data` is base64 in JSON.
    Image {
        /// The encoded image bytes.
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
        /// Its media type.
        #[serde(default = "default_image_mime")]
        mime: String,
    },
    /// An audio clip; `data` is base64 in JSON.
    Audio {
        /// The encoded audio bytes.
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
        /// Its media type.
        #[serde(default = "default_audio_mime")]
        mime: String,
    },
}

fn default_image_mime() -> String {
    "image/png".into()
}

fn default_audio_mime() -> String {
    "audio/wav".into()
}

impl ContentPart {
    /// The `kind` tag: `text`, `image` or `audio`.
    pub fn kind(&self) -> &'static str {
        match self {
            ContentPart::Text { .. } => "text",
            ContentPart::Image { .. } => "image",
            ContentPart::Audio { .. } => "audio",
        }
    }
}

/// What a policy observes: an ordered list of content parts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// The parts, in order.
    #[serde(default)]
    pub content: Vec<ContentPart>,
}

impl Observation {
    /// A text-only observation.
    pub fn from_text(text: impl Into<String>) -> Self {
        Observation {
            content: vec![ContentPart::Text { text: text.into() }],
        }
    }

    /// Every text part, joined by newlines.
    pub fn text(&self) -> String {
        let texts: Vec<&str> = self
            .content
            .iter()
            .filter_map(|p| match p {
                ContentPart::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        texts.join("\n")
    }

    /// Every part of one kind (`text`, `image` or `audio`).
    pub fn parts(&self, kind: &str) -> Vec<&ContentPart> {
        self.content.iter().filter(|p| p.kind() == kind).collect()
    }
}

/// What kind of decision an [`Action`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// A final answer.
    Text,
    /// A request to call a tool (`payload` is `{name, args}`).
    ToolCall,
    /// A low-level control command.
    Command,
}

/// What a policy decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// The kind of decision.
    pub kind: ActionKind,
    /// Its data.
    #[serde(default)]
    pub payload: JsonObject,
}

impl Action {
    /// A final-answer action.
    pub fn text(text: impl Into<String>) -> Self {
        let mut payload = JsonObject::new();
        payload.insert("text".into(), text.into().into());
        Action {
            kind: ActionKind::Text,
            payload,
        }
    }

    /// A tool call, shaped like [`crate::ports::ToolCall`].
    pub fn tool_call(name: impl Into<String>, args: JsonObject) -> Self {
        let mut payload = JsonObject::new();
        payload.insert("name".into(), name.into().into());
        payload.insert("args".into(), args.into());
        Action {
            kind: ActionKind::ToolCall,
            payload,
        }
    }

    /// A control command with free-form data.
    pub fn command(payload: JsonObject) -> Self {
        Action {
            kind: ActionKind::Command,
            payload,
        }
    }
}

mod base64_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_parts_round_trip_as_base64() {
        let obs = Observation {
            content: vec![
                ContentPart::Text { text: "a".into() },
                ContentPart::Image {
                    data: vec![0, 159, 255],
                    mime: "image/png".into(),
                },
            ],
        };
        let json = serde_json::to_value(&obs).unwrap();
        assert_eq!(json["content"][1]["data"], "AJ//");
        assert_eq!(json["content"][1]["kind"], "image");
        let back: Observation = serde_json::from_value(json).unwrap();
        assert_eq!(back, obs);
        assert_eq!(back.text(), "a");
        assert_eq!(back.parts("image").len(), 1);
    }

    #[test]
    fn invalid_base64_is_an_error() {
        let bad = serde_json::json!({"content": [{"kind": "audio", "data": "!!"}]});
        assert!(serde_json::from_value::<Observation>(bad).is_err());
    }

    #[test]
    fn tool_call_action_mirrors_tool_call_shape() {
        let a = Action::tool_call("noop", JsonObject::new());
        assert_eq!(serde_json::to_value(&a).unwrap()["payload"]["name"], "noop");
        assert_eq!(serde_json::to_value(&a).unwrap()["kind"], "tool_call");
    }
}
