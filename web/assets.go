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

// sdkFiles are the browser SDK and its test page, served under /sdk/.
//
//go:embed sdk/switchboard.js sdk/room-test.html
var sdkFiles embed.FS

// devOnlyAssets are served only when dev tokens are on: they fetch tokens
// from /api/dev/token, which does not exist otherwise.
var devOnlyAssets = map[string]bool{"room-test.html": true}

// assetCacheControl makes browsers revalidate every use (a cheap 304 with
// the ETag), so a new server version is picked up at once.
const assetCacheControl = "no-cache"

type asset struct {
	body        []byte
	contentType string
	etag        string
}

// mountAssets serves the embedded SDK files at GET /sdk/<name>.
func (s *Server) mountAssets() {
	assets := map[string]asset{}
	err := fs.WalkDir(sdkFiles, "sdk", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name := path.Base(p)
		if devOnlyAssets[name] && !s.dev {
			return nil
		}
		body, err := sdkFiles.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		assets[name] = asset{body: body, contentType: assetContentType(name), etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil { // the files are compiled in: this cannot happen
		s.log.Error("reading the embedded SDK files", "err", err)
	}
	s.mux.HandleFunc("GET /sdk/{name}", func(w http.ResponseWriter, r *http.Request) {
		a, ok := assets[r.PathValue("name")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.contentType)
		h.Set("Cache-Control", assetCacheControl)
		h.Set("ETag", a.etag)
		h.Set("X-Content-Type-Options", "nosniff")
		http.ServeContent(w, r, r.PathValue("name"), time.Time{}, bytes.NewReader(a.body))
	})
}

func assetContentType(name string) string {
	switch path.Ext(name) {
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".html":
		return "text/html; charset=utf-8"
	}
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	return "application/octet-stream"
}
