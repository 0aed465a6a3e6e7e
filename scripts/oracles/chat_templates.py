#!/usr/bin/env python3
"""Chat template oracle: renders conversations with Jinja2 exactly as HF transformers does, for our ChatML renderer.

Templates: SmolLM2's `tokenizer.chat_template` read from the GGUF, and plain ChatML (the tiny test models'
template, a copy of adapterci_engine::chat::CHATML_TEMPLATE). Each conversation is rendered with
add_generation_prompt false and true in an ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True),
HF's settings, and the SmolLM2 renderings are cross-checked with HF's own apply_chat_template on the GGUF
tokenizer. Writes crates/adapterci-engine/tests/fixtures/tokenizer/chat_expected.json.

Run from the repository root with the peer venv (see scripts/oracles/README.md):
    .venv-peers/bin/python scripts/oracles/chat_templates.py [--model PATH] [--check]
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "crates/adapterci-engine/tests/fixtures/tokenizer/chat_expected.json"
DEFAULT_MODEL = ROOT / ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"

# Must equal adapterci_engine::chat::CHATML_TEMPLATE (the Rust test checks it).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def m(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = {
    "single-user": [m("user", "Hello!")],
    "system-given": [m("system", "You are terse."), m("user", "Hi")],
    "multi-turn": [m("user", "What is 2+2?"), m("assistant", "4"), m("user", "And 3+3?")],
    "system-multi-turn": [m("system", "Answer in French."), m("user", "Hello"), m("assistant", "Bonjour"),
                          m("user", "Thanks")],
    "assistant-first": [m("assistant", "How can I help?"), m("user", "Tell me a joke.")],
    "system-not-first": [m("user", "Hi"), m("system", "Be brief."), m("user", "Explain rust")],
    "empty": [],
    "empty-content": [m("user", "")],
    "whitespace-and-unicode": [m("user", "  leading and trailing  \n\n"), m("assistant", "\tCafé 中文 👩‍💻\r\n")],
    "multiline-code": [m("user", "Fix this:\n```rust\nfn main() {\n    println!(\"hi\")\n}\n```")],
    "custom-role": [m("tool", "{\"temperature\": 21}"), m("user", "Is it warm?")],
}


def jinja_render(template, messages, add_generation_prompt):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return environment.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt)


def smollm2_template(model_path):
    from gguf import GGUFReader

    return GGUFReader(str(model_path)).fields["tokenizer.chat_template"].contents()


def hf_cross_check(model_path, cases):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_path.parent), gguf_file=model_path.name)
    agree = total = 0
    for case in cases:
        if case["template"] != "smollm2" or not case["messages"]:
            continue
        rendered = tokenizer.apply_chat_template(case["messages"], tokenize=False,
                                                 add_generation_prompt=case["add_generation_prompt"])
        total += 1
        agree += rendered == case["expected"]
        if rendered != case["expected"]:
            print(f"hf differs on {case['name']}: {rendered!r}")
    print(f"hf apply_chat_template agrees with jinja2 on {agree}/{total} smollm2 renderings")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=pathlib.Path,
                        default=pathlib.Path(os.environ.get("ADAPTERCI_BASE_MODEL", DEFAULT_MODEL)))
    parser.add_argument("--check", action="store_true", help="fail if the committed fixture differs, write nothing")
    args = parser.parse_args()
    if not args.model.is_file():
        print(f"error: model {args.model} not found (set ADAPTERCI_BASE_MODEL or pass --model)", file=sys.stderr)
        return 2

    templates = {"smollm2": smollm2_template(args.model), "chatml": CHATML_TEMPLATE}
    cases = []
    for template_name, template in templates.items():
        for name, messages in CONVERSATIONS.items():
            for add_generation_prompt in (False, True):
                cases.append({
                    "name": f"{template_name}/{name}/{'prompt' if add_generation_prompt else 'no-prompt'}",
                    "template": template_name,
                    "messages": messages,
                    "add_generation_prompt": add_generation_prompt,
                    "expected": jinja_render(template, messages, add_generation_prompt),
                })
    document = {"generator": "scripts/oracles/chat_templates.py", "templates": templates, "cases": cases}
    rendered = json.dumps(document, ensure_ascii=True, indent=1) + "\n"
    print(f"{len(cases)} renderings")

    status = 0
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.is_file() else ""
        if current != rendered:
            print(f"error: {OUT} is stale; rerun without --check to regenerate", file=sys.stderr)
            status = 1
        else:
            print(f"{OUT} is up to date")
    else:
        OUT.write_text(rendered, encoding="utf-8")
        print(f"wrote {OUT}")
    hf_cross_check(args.model, cases)
    return status


if __name__ == "__main__":
    sys.exit(main())
