// A server-sent event stream the page keeps open while it is wanted, shared by the pages.
//
// A dropped connection (a gateway restarting, a network blip) is retried by the EventSource
// itself: the state reads "connecting" meanwhile, and "open" again on each reconnect, which is
// when a page re-reads what it may have missed. When the browser gives up (a 401, a 5xx), the
// session is checked: a 401 sends the user to sign in, anything else is retried later.

import { api } from "./http.js";
import { sessionExpired } from "./session.js";

const REOPEN_DELAY_MS = 2000;

export class LiveSource {
  /** `events`: {name: handler(data)}; `onState`: "open" | "connecting" | "closed". */
  constructor(url, { events, onState = () => {} }) {
    this.url = url;
    this.events = events;
    this.onState = onState;
    this.source = null;
    this.wanted = false;
  }

  open() {
    this.wanted = true;
    if (this.source) return;
    const source = new EventSource(this.url);
    this.source = source;
    this.onState("connecting");
    source.addEventListener("open", () => this.onState("open"));
    for (const [name, handler] of Object.entries(this.events)) {
      source.addEventListener(name, (event) => {
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          return; // not ours to show
        }
        handler(data);
      });
    }
    source.addEventListener("error", () => {
      if (source !== this.source) return;
      if (source.readyState !== EventSource.CLOSED) {
        this.onState("connecting"); // retried by the browser
        return;
      }
      this.source = null;
      this.onState("closed");
      this.recover();
    });
  }

  close() {
    this.wanted = false;
    if (this.source) this.source.close();
    this.source = null;
    this.onState("closed");
  }

  async recover() {
    try {
      await api("GET", "/session");
    } catch (error) {
      if (error.status === 401) {
        sessionExpired();
        return;
      }
    }
    setTimeout(() => {
      if (this.wanted) this.open();
    }, REOPEN_DELAY_MS);
  }
}
