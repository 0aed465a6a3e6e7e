//! `generate [--adapter NAME] [--raw] PROMPT`: one completion; the text on stdout, who answered and how fast on
//! stderr.

use std::io::Read;

use adapterci_api::inference::BASE_MODEL;
use adapterci_api::{ChatCompletionRequest, ChatMessage, CompletionRequest, FinishReason, InferenceInfo, Usage};

use crate::cli::GenerateArgs;
use crate::commands::Context;
use crate::exit::{CliError, ExitStatus};
use crate::output::{OutputFormat, stdout_text};
use crate::render::short_digest;

pub async fn generate(context: &Context, args: &GenerateArgs) -> Result<ExitStatus, CliError> {
    let prompt = if args.prompt == "-" { read_stdin()? } else { args.prompt.clone() };
    let model = args.adapter.clone().unwrap_or_else(|| BASE_MODEL.to_string());
    let not_found_hint = "list the served models with `adapterctl models`";
    let (text, finish_reason, usage, info) = if args.raw {
        let mut request = CompletionRequest::new(&model, prompt);
        (request.max_tokens, request.temperature, request.seed) = (args.max_tokens, args.temperature, args.seed);
        let response = context
            .client
            .completion(&request)
            .await
            .map_err(|err| CliError::from(err).with_not_found_hint(not_found_hint))?;
        if context.output.format != OutputFormat::Table {
            context.output.data(&response, |_| String::new())?;
            return Ok(ExitStatus::Success);
        }
        let choice = response.choices.into_iter().next();
        let (text, finish) = choice.map_or((String::new(), None), |choice| (choice.text, Some(choice.finish_reason)));
        (text, finish, response.usage, response.adapterci)
    } else {
        let mut request = ChatCompletionRequest::new(&model, vec![ChatMessage::user(prompt)]);
        (request.max_tokens, request.temperature, request.seed) = (args.max_tokens, args.temperature, args.seed);
        let response = context
            .client
            .chat_completion(&request)
            .await
            .map_err(|err| CliError::from(err).with_not_found_hint(not_found_hint))?;
        if context.output.format != OutputFormat::Table {
            context.output.data(&response, |_| String::new())?;
            return Ok(ExitStatus::Success);
        }
        let choice = response.choices.into_iter().next();
        let (text, finish) =
            choice.map_or((String::new(), None), |choice| (choice.message.content, Some(choice.finish_reason)));
        (text, finish, response.usage, response.adapterci)
    };
    stdout_text(&text)?;
    context.output.note(&generation_summary(&model, &info, &usage, finish_reason));
    Ok(ExitStatus::Success)
}

/// `sql-adapter version 3 (sha256:…) · ttft 12.5 ms · 120.2 tok/s · 9 tokens · stop`.
pub fn generation_summary(model: &str, info: &InferenceInfo, usage: &Usage, finish: Option<FinishReason>) -> String {
    let who = match (info.adapter_version, &info.manifest_digest) {
        (Some(version), Some(digest)) => format!("{model} version {version} ({})", short_digest(digest)),
        (Some(version), None) => format!("{model} version {version}"),
        _ => format!("{model} ({})", short_digest(&info.base_model_digest)),
    };
    let finish = finish.map_or("no choice", FinishReason::as_str);
    format!(
        "{who} · ttft {:.1} ms · {:.1} tok/s · {} tokens · {finish}",
        info.time_to_first_token_ms, info.decode_tokens_per_second, usage.completion_tokens
    )
}

fn read_stdin() -> Result<String, CliError> {
    let mut prompt = String::new();
    std::io::stdin()
        .read_to_string(&mut prompt)
        .map_err(|err| CliError::new(format!("cannot read the prompt from stdin: {err}")))?;
    Ok(prompt)
}
