// Starts ReDoc (vendored in redoc/, see NOTICE.md) from a file of our own, so the /redoc page
// needs no inline script and works under Content-Security-Policy: default-src 'self' without
// any CDN.
//
// ReDoc styles itself with styled-components, which appends an empty <style> element and
// then inserts its rules through that element's CSSOM sheet. The policy blocks the inline
// <style> (it has no sheet then), so styled-components would stop with its error 17. Script
// from this origin may still style the page through the CSSOM: such an element gets a
// constructed stylesheet, adopted by the document, in place of the sheet it was refused. The
// policy stays as strict as it is; no markup-injected style is allowed by this.
(function () {
  var nativeSheet = Object.getOwnPropertyDescriptor(HTMLStyleElement.prototype, "sheet");
  if (!nativeSheet || !nativeSheet.get || !("adoptedStyleSheets" in Document.prototype)) {
    return;
  }
  var constructed = new WeakMap();
  Object.defineProperty(HTMLStyleElement.prototype, "sheet", {
    configurable: true,
    enumerable: nativeSheet.enumerable,
    get: function () {
      var sheet = nativeSheet.get.call(this);
      if (sheet || !this.isConnected) {
        return sheet;
      }
      if (!constructed.has(this)) {
        var replacement = new CSSStyleSheet();
        document.adoptedStyleSheets = document.adoptedStyleSheets.concat([replacement]);
        constructed.set(this, replacement);
      }
      return constructed.get(this);
    },
  });
})();

window.addEventListener("load", function () {
  Redoc.init(
    "/openapi.json",
    {
      // ReDoc's search runs in a Worker made from a blob: URL, which the policy forbids.
      disableSearch: true,
      // Native scrollbars: perfect-scrollbar's styles come as an inline <style>.
      nativeScrollbars: true,
    },
    document.getElementById("redoc"),
  );
});
