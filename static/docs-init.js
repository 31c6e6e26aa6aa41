// Starts Swagger UI on /api/v1/docs. A file, not an inline script: the app's
// Content-Security-Policy allows scripts from 'self' only.
window.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = window.SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // The default asks validator.swagger.io for a badge: no request leaves this origin.
    validatorUrl: null,
    // "Try it out" calls this same server with the bearer token entered under Authorize.
    persistAuthorization: false,
    tryItOutEnabled: false,
  });
});
