// The web chat: POST the question to /api/log, parse the server-sent events of the response body,
// apply each event's JSON patch to the run's state and render the answer as it grows.
// `jsonpatch` is the global of vendor/fast-json-patch.min.js, which index.html loads first.

/**
 * An incremental text/event-stream parser, after the WHATWG "event stream interpretation".
 * Feed it the body's bytes split anywhere (inside a UTF-8 sequence, between CR and LF);
 * each call returns the events those bytes completed, as {type, data, id}.
 */
export class SSEParser {
  #decoder = new TextDecoder(); // UTF-8; drops a leading BOM, keeps a split sequence for later
  #line = ""; // the line still waiting for its end
  #afterCR = false; // the last text ended in CR: an LF that starts the next text completes it
  #type = "";
  #data = "";
  lastEventId = "";

  feed(bytes) {
    let text = this.#decoder.decode(bytes, { stream: true });
    if (!text) return [];
    if (this.#afterCR && text[0] === "\n") text = text.slice(1);
    this.#afterCR = text.endsWith("\r");
    const lines = (this.#line + text).split(/\r\n|\r|\n/);
    this.#line = lines.pop();
    const events = [];
    for (const line of lines) {
      const event = this.#interpret(line);
      if (event) events.push(event);
    }
    return events;
  }

  #interpret(line) {
    if (line === "") {
      // A blank line ends the event; one without data lines is dropped, but resets the type.
      const event = this.#data
        ? { type: this.#type || "message", data: this.#data.slice(0, -1), id: this.lastEventId }
        : null;
      this.#type = "";
      this.#data = "";
      return event;
    }
    if (line[0] === ":") return null; // a comment, such as a keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "event") this.#type = value;
    else if (field === "data") this.#data += value + "\n";
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    // "retry" sets a reconnection delay, and this page does not reconnect.
    return null;
  }
}

const form = document.querySelector("#ask");
const question = document.querySelector("#question");
const send = document.querySelector("#send");
const stop = document.querySelector("#stop");
const answer = document.querySelector("#answer");
const status = document.querySelector("#status");

let controller = null; // aborts the request in flight, if any
let runId = null; // the run being streamed, named by the response's Chatstream-Run-Id header

function show(state, message) {
  answer.dataset.state = state;
  answer.setAttribute("aria-busy", String(state === "streaming"));
  send.disabled = state === "streaming";
  stop.disabled = state !== "streaming";
  status.textContent = message;
}

/** The text of a message's content: a string, or a list of content blocks. */
function textOf(content) {
  if (typeof content === "string") return content;
  return content.filter((block) => block.type === "text").map((block) => block.text).join("");
}

/** Apply one patch event's ops to the run's state and render what they added. */
function applyPatch(run, ops) {
  // In place (the library's default): nothing else holds the state, and copying it for every
  // patch would make a long answer cost quadratic time.
  run.state = jsonpatch.applyPatch(run.state, ops).newDocument;
  answer.dataset.patches = String(++run.patches);
  answer.dataset.runId = run.state.id ?? "";
  const chunks = run.state.streamed_output ?? [];
  for (; run.shown < chunks.length; run.shown++) {
    const text = textOf(chunks[run.shown].content);
    if (text) {
      answer.append(text);
      if (++run.tokens === 1) status.textContent = "Streaming…";
    }
  }
  const final = run.state.final_output;
  if (final) answer.textContent = final.generations[0][0].text;
}

async function problemOf(response) {
  try {
    return (await response.json()).error.message;
  } catch {
    return `the server answered ${response.status}`;
  }
}

async function ask(text) {
  controller = new AbortController();
  const run = { state: {}, patches: 0, shown: 0, tokens: 0 };
  answer.textContent = "";
  answer.dataset.patches = "0";
  show("streaming", "Waiting for the first token…");
  try {
    const response = await fetch("api/log", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify({ input: text }),
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(await problemOf(response));
    runId = response.headers.get("Chatstream-Run-Id");
    const parser = new SSEParser();
    const reader = response.body.getReader();
    let ending = null; // the "end" or "error" event, which the server sends last
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      for (const event of parser.feed(read.value)) {
        if (event.type === "patch") applyPatch(run, JSON.parse(event.data));
        else ending = event;
      }
    }
    if (ending?.type === "end") show("done", `Done: ${run.tokens} tokens, ${run.patches} patches.`);
    else if (ending?.type === "error") show("error", `Error: ${JSON.parse(ending.data).message}`);
    else show("error", "Error: the stream ended before the run did.");
  } catch (error) {
    // The run outlives a dropped connection (so that a client can resume it): Stop also asks
    // the server to cancel it.
    if (error.name === "AbortError") show("stopped", `Stopped after ${run.tokens} tokens.`);
    else show("error", `Error: ${error.message}`);
  } finally {
    controller = null;
    runId = null;
  }
}

function stopRun() {
  if (runId) fetch(`api/log/${encodeURIComponent(runId)}`, { method: "DELETE" }).catch(() => {});
  controller?.abort();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = question.value.trim();
  if (text && !controller) ask(text);
});
stop.addEventListener("click", stopRun);
