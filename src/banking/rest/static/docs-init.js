// Starts Swagger UI (vendored in swagger-ui/, see NOTICE.md) from a file of our own, so the
// /docs page needs no inline script and works under Content-Security-Policy: default-src
// 'self' without any CDN.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // No badge that sends the document to the public validator: the page stays local.
    validatorUrl: null,
  });
});
