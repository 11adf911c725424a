//! One tool of an MCP server as a Zu tool: named `SERVER__tool`, with the
//! server's input schema and description; a call goes to the server with
//! the run's time left.

use std::sync::Arc;

use serde_json::{json, Value};
use zu_plugin_api::contracts::JsonObject;
use zu_plugin_api::ports::{PluginError, RunContext, Tool};

use crate::server::Server;

/// A tool the server listed.
pub struct McpTool {
    pub(crate) server: Arc<Server>,
    /// The tool's name on the server.
    pub(crate) tool: String,
    /// The Zu name, `SERVER__tool`.
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) input_schema: Value,
}

impl Tool for McpTool {
    fn schema(&self) -> Value {
        json!({"name": self.name, "description": self.description, "parameters": self.input_schema})
    }
    fn prompt_fragment(&self) -> String {
        if self.description.is_empty() {
            format!("{}: a tool of MCP server {}", self.name, self.server.name)
        } else {
            format!("{}: {}", self.name, self.description)
        }
    }
    fn call(&self, ctx: &dyn RunContext, args: JsonObject) -> Result<JsonObject, PluginError> {
        self.server.call(&self.tool, args, ctx.time_left())
    }
}
