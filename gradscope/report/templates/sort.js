// Sort a table by clicking a column header (again to reverse). Without JavaScript the
// table simply stays in forward (input -> output) order.
(function () {
  "use strict";
  function keyOf(cell, numeric) {
    if (!cell) { return null; }
    if (numeric) {
      var raw = cell.getAttribute("data-sort");
      return raw === null || raw === "" ? null : parseFloat(raw);
    }
    return cell.textContent.trim().toLowerCase();
  }
  function sortBy(table, header, column) {
    var numeric = header.getAttribute("data-type") === "num";
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var keyed = rows.map(function (row, index) {
      return { row: row, index: index, key: keyOf(row.cells[column], numeric) };
    });
    keyed.sort(function (a, b) {
      // Missing values go last in both directions; ties keep their current order.
      if (a.key === null || b.key === null) {
        return a.key === b.key ? a.index - b.index : (a.key === null ? 1 : -1);
      }
      var order = numeric ? a.key - b.key : a.key.localeCompare(b.key);
      if (!ascending) { order = -order; }
      return order !== 0 ? order : a.index - b.index;
    });
    keyed.forEach(function (item) { body.appendChild(item.row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    if (!table.tHead || !table.tBodies.length) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
      header.tabIndex = 0;
      header.addEventListener("click", function () { sortBy(table, header, column); });
      header.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(table, header, column); }
      });
    });
    table.classList.add("js-sortable");
  });
})();
