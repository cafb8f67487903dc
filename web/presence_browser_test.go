package web_test

import (
	"context"
	"fmt"
	"testing"
)

// contactPresence waits until alice's contact list shows user with the
// presence text want, its dot visible (a size, not hidden), and returns the
// dot's colour.
func contactPresence(ctx context.Context, t *testing.T, p *browserPage, user, want string) string {
	t.Helper()
	cond := fmt.Sprintf(`(() => {
		const row = document.querySelector('[data-testid="contact"][data-user=%[1]q]');
		const line = row?.querySelector('[data-testid="contact-presence"]');
		const dot = row?.querySelector('[data-testid="contact-presence-dot"]');
		if (!line || !dot) return null;
		const r = dot.getBoundingClientRect(), cs = getComputedStyle(dot);
		const visible = r.width >= 4 && r.height >= 4 && dot.checkVisibility({visibilityProperty: true, opacityProperty: true});
		return visible && line.textContent.trim() === %[2]q ? cs.backgroundColor : null;
	})()`, user, want)
	describe := fmt.Sprintf(`{line: document.querySelector('[data-testid="contact"][data-user=%q]')?.innerText ?? null, presence: window.demoState?.presence}`, user)
	colour, ok := pageWait[string](ctx, p, uiWait, cond, describe)
	must(t, ok)
	return colour
}

// TestBrowserDemoPresence: alice's contact list shows bob going online,
// offline and online again, live (no refresh), as a coloured dot and text.
func TestBrowserDemoPresence(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), demoTestBudget)
	defer cancel()
	base := startServer(t, 0)
	pages := startDemoPages(t, "alice", "bob")
	alice, bob := pages[0], pages[1]
	signIn(ctx, t, bob, base, "bob") // bob joins the lobby first, then leaves
	must(t, bob.click(ctx, sel("signout"), uiWait))
	must(t, bob.waitSel(ctx, `[data-testid="signin-name"]`, uiWait))

	signIn(ctx, t, alice, base, "alice")
	offline := contactPresence(ctx, t, alice, "bob", "offline")

	signIn(ctx, t, bob, base, "bob")
	online := contactPresence(ctx, t, alice, "bob", "online")
	const green = "rgb(23, 163, 74)"
	if online != green || offline == green {
		t.Errorf("dot colours: online %q (want %s), offline %q (want another)", online, green, offline)
	}

	must(t, bob.click(ctx, sel("signout"), uiWait))
	if c := contactPresence(ctx, t, alice, "bob", "offline"); c != offline {
		t.Errorf("offline again: dot %q, want %q", c, offline)
	}
	// A custom text reaches the list too.
	signIn(ctx, t, bob, base, "bob")
	contactPresence(ctx, t, alice, "bob", "online")
	if _, err := pageEval[any](ctx, bob, `window.demo.sb.setSelfStatus('in a meeting')`); err != nil {
		t.Fatalf("setSelfStatus on bob's page: %v", err)
	}
	contactPresence(ctx, t, alice, "bob", "online · in a meeting")
	noPageErrors(ctx, t, alice, bob)
}
