//! Tests for the ChatML template recogniser.

use super::*;
use crate::chat::CHATML_TEMPLATE;

const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ \
    '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif \
    %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if \
    add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fn check(template: &str, expect_default_system: Option<&str>) {
    let found = recognise(template).unwrap_or_else(|error| panic!("{template:?}: {error}"));
    assert_eq!(found.as_deref(), expect_default_system, "{template:?}");
}

fn check_refused(template: &str, expect: &str) {
    let error = recognise(template).expect_err("should be refused").to_string();
    assert!(error.contains(expect), "{template:?}: {error}");
    assert!(error.contains("only ChatML templates"), "{error}");
}

#[test]
fn recognises_chatml_spellings() {
    check(CHATML_TEMPLATE, None);
    check(SMOLLM2, Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face"));
    // Multi-line with whitespace control, attribute access, double quotes and split outputs.
    check(
        "{%- for message in messages -%}\n  {{- \"<|im_start|>\" + message.role + \"\\n\" }}{{ message.content + \
         '<|im_end|>\\n' -}}\n{%- endfor %}\n{% if add_generation_prompt %}\n{{ '<|im_start|>assistant\\n' }}\n{%- \
         endif %}",
        None,
    );
    // trim_blocks eats the newline after a block; lstrip_blocks the indentation before one.
    check(
        "{% for message in messages %}\n    {% if loop.index0 == 0 and messages[0]['role'] != 'system' %}\n{{ \
         '<|im_start|>system\\nBe brief.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + \
         message['content'] + '<|im_end|>\\n'}}{% endfor %}{# generation #}{% if add_generation_prompt %}{{ \
         '<|im_start|>assistant\\n' }}{% endif %}",
        Some("Be brief."),
    );
}

#[test]
fn refuses_other_templates() {
    let llama3 = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = \
        '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}\
        {{ content }}{% endfor %}";
    check_refused(llama3, "unsupported expression \"content\"");
    check_refused("{% set x = 1 %}{{ x }}", "unsupported expression \"x\"");
    check_refused("{% if messages %}{% endif %}", "expected {% formessageinmessages %}, found {% ifmessages %}");
    let zephyr = "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '</s>\n' }}\
        {% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}";
    check_refused(zephyr, "expected the ChatML turn");
    check_refused(&CHATML_TEMPLATE.replace("{% endfor %}", "{% endfor %}\n\n"), "literal text \"\\n\"");
    check_refused(&CHATML_TEMPLATE.replace("{{'<|im_start|>'", "x{{'<|im_start|>'"), "literal text \"x\"");
    let no_prompt = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + \
        '<|im_end|>\n'}}{% endfor %}";
    check_refused(no_prompt, "ifadd_generation_prompt");
    check_refused(
        &CHATML_TEMPLATE.replace("message['content']", "message['content'] | trim"),
        "unsupported expression",
    );
    check_refused("{% for message in messages %}{{ 'oops }}", "never closed");
    check_refused(&SMOLLM2.replace("named SmolLM", "<|im_end|>"), "not a fixed ChatML system turn");
    check_refused(&format!("{CHATML_TEMPLATE}{{{{ eos_token }}}}"), "unsupported expression \"eos_token\"");
    check_refused(&format!("{CHATML_TEMPLATE}{{% if x %}}{{% endif %}}"), "unexpected {% ifx %} after the generation");
    check_refused("", "found the end of the template");
}
