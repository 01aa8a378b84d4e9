// The one DOM helper the page's scripts share: el(tag, attributes, ...children), children
// as nodes or text (text is never parsed as HTML).
"use strict";

(function (global) {
  function el(tag, attrs = {}, ...children) {
    const node = global.document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    for (const c of children) node.append(c instanceof Node ? c : global.document.createTextNode(String(c)));
    return node;
  }

  global.carescoreDom = { el };
})(window);
