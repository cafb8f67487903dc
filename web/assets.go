package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"time"
)

// sdkFiles are the browser SDK and its test page (with its script and
// styles: no inline code, see contentSecurityPolicy), served under /sdk/.
//
//go:embed sdk/switchboard.js sdk/room-test.html sdk/room-test.js sdk/room-test.css
var sdkFiles embed.FS

// demoFiles are the demo app (web/demo): index.html is served at /, the
// other files under /demo/. It signs in with dev tokens when the server
// issues them, and asks for a session token otherwise.
//
//go:embed demo/*.html demo/*.js demo/*.css
var demoFiles embed.FS

// devOnlyAssets are served only when dev tokens are on: they fetch tokens
// from /api/dev/token, which does not exist otherwise.
var devOnlyAssets = map[string]bool{"room-test.html": true, "room-test.js": true, "room-test.css": true}

// assetCacheControl makes browsers revalidate every use (a cheap 304 with
// the ETag), so a new server version is picked up at once.
const assetCacheControl = "no-cache"

type asset struct {
	body        []byte
	contentType string
	etag        string
}

// mountAssets serves the embedded SDK files at GET /sdk/<name>, the demo's
// files at GET /demo/<name> and its page at GET /.
func (s *Server) mountAssets() {
	sdk := s.loadAssets(sdkFiles, "sdk")
	demo := s.loadAssets(demoFiles, "demo")
	s.mux.HandleFunc("GET /sdk/{name}", func(w http.ResponseWriter, r *http.Request) {
		serveAsset(w, r, sdk, r.PathValue("name"))
	})
	s.mux.HandleFunc("GET /demo/{name}", func(w http.ResponseWriter, r *http.Request) {
		serveAsset(w, r, demo, r.PathValue("name"))
	})
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		serveAsset(w, r, demo, "index.html")
	})
}

// loadAssets reads the files of one embedded directory, by base name.
func (s *Server) loadAssets(files embed.FS, dir string) map[string]asset {
	assets := map[string]asset{}
	err := fs.WalkDir(files, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name := path.Base(p)
		if devOnlyAssets[name] && !s.dev {
			return nil
		}
		body, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		assets[name] = asset{body: body, contentType: assetContentType(name), etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil { // the files are compiled in: this cannot happen
		s.log.Error("reading the embedded files", "dir", dir, "err", err)
	}
	return assets
}

func serveAsset(w http.ResponseWriter, r *http.Request, assets map[string]asset, name string) {
	a, ok := assets[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("Cache-Control", assetCacheControl)
	h.Set("ETag", a.etag)
	h.Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body))
}

func assetContentType(name string) string {
	switch path.Ext(name) {
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".html":
		return "text/html; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	}
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	return "application/octet-stream"
}
